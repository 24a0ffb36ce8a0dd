"""``arfm evaluate``: generate N samples from a trained model, score them in Ray tasks, log to MLflow."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail


def evaluate(
    run: Annotated[Optional[str], typer.Option("--run", help="MLflow run id of a training run")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="registered model: NAME, NAME/VERSION or "
                                                 "models:/NAME/VERSION")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="'valid' (held-out split), a .txt of captions or a "
                                                   "manifest.jsonl")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="number of samples (default eval.n_samples)")] = None,
    untuned: Annotated[bool, typer.Option("--untuned", help="ignore the sampling a search (arfm tune) attached "
                                          "to the model: sample with the run's own settings")] = False,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate a trained model: FAD (offline embedding unless configured), CLAP and aesthetics when their
    checkpoints are given, chord IOU, downbeat F1, melody similarity, AR entropy; FM also per Euler step count.

    Settings: the run's own config (what it was trained and sampled with), then the sample settings a sampling
    search attached to the model (arfm tune; --untuned skips them), then the sample / eval / tracking sections
    of --preset and of --config, then each --set (sample.*, eval.* or tracking.* only: the model, codec, text
    encoder and data are the run's). The settings used are logged as tags eval/sample.cfg ..., and where the
    sample settings came from as eval/sample_from.

    Examples:
      arfm evaluate --run 0123abcd... --n 64
      arfm evaluate --run 0123abcd... --set sample.cfg=1.5
      arfm evaluate --model arfm-fm --set eval.euler_steps=[10,25,50,200] --set sample.solver=dopri5
      arfm evaluate --run 0123abcd... --prompts captions.txt --set eval.clap_checkpoint=/ckpt/clap.pt
    """
    from arfm.config import ConfigError

    if not run and not model:
        fail("give --run RUN_ID or --model NAME")
    if n is not None and n < 1:
        fail(f"--n must be >= 1 (got {n})")
    from arfm.evaluate.job import evaluate_run, user_layer

    try:
        layer = user_layer(preset, config, set_ or [], {"eval": {"prompts": prompts}} if prompts else None)
        result = evaluate_run(run_id=run, model=model, n=n, layer=layer, tuned=not untuned)
    except ConfigError as exc:
        fail(str(exc))
        return
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    typer.echo(f"sampling: {result['sampling']}")
    for note in result["notes"]:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    for key, value in sorted(result["metrics"].items()):
        typer.echo(f"{key:40s} {value:.4f}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
