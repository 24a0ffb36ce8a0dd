"""``arfm generate``: audio from a trained model through the one generation API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job


def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="saved-model folder, runs:/RUN_ID/model, "
                                       "models:/NAME/VERSION or an MLflow run id")],
    prompt: Annotated[list[str], typer.Option("--prompt", help="caption (repeatable)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the WAV files")] = Path("runs/generated"),
    seconds: Annotated[Optional[float], typer.Option(help="length; default: the model's segment length")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate one clip per --prompt; sampling parameters come from the `sample` section of the config.

    Examples:
      arfm generate -m runs:/0123abcd.../model --prompt "upbeat funk, 110 bpm, bass and drums"
      arfm generate -m models:/arfm-fm/1 --prompt "calm piano" --set sample.solver=dopri5 --set sample.cfg=4
      arfm generate -m models:/arfm-ar/1 --prompt "rock" --set sample.top_p=0.8 --set sample.temperature=1.2
    """
    import json

    import soundfile as sf

    from arfm.generate import GenerationError, GenerationRequest, Generator

    job = load_job(config, preset or "tiny", set_)
    try:
        gen = Generator.load(model)
        reqs = [GenerationRequest(caption=p, seconds=seconds, seed=seed + i) for i, p in enumerate(prompt)]
        results = gen.generate(reqs, sample=job.sample if set_ or config else None)
    except (GenerationError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        path = out / f"sample_{i:03d}.wav"
        sf.write(path, r.audio, r.sample_rate, subtype="PCM_16")
        info = {k: v for k, v in r.info.items() if k != "entropy"}
        typer.echo(f"{path}  {r.caption!r}  {json.dumps(info, default=str)}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
