"""``arfm evaluate``: generate N samples from a trained model, score them in Ray tasks, log to MLflow."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job


def evaluate(
    run: Annotated[Optional[str], typer.Option("--run", help="MLflow run id of a training run")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="registered model: NAME, NAME/VERSION or "
                                                 "models:/NAME/VERSION")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="'valid' (held-out split), a .txt of captions or a "
                                                   "manifest.jsonl")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="number of samples (default eval.n_samples)")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate a trained model: FAD (offline embedding unless configured), CLAP and aesthetics when their
    checkpoints are given, chord IOU, downbeat F1, melody similarity, AR entropy; FM also per Euler step count.

    Examples:
      arfm evaluate --run 0123abcd... --n 64
      arfm evaluate --model arfm-fm --set eval.euler_steps=[10,25,50,200] --set sample.solver=dopri5
      arfm evaluate --run 0123abcd... --prompts captions.txt --set eval.clap_checkpoint=/ckpt/clap.pt
    """
    if not run and not model:
        fail("give --run RUN_ID or --model NAME")
    if n is not None and n < 1:
        fail(f"--n must be >= 1 (got {n})")
    extra = {"eval": {"prompts": prompts}} if prompts else {}
    job = load_job(config, preset or "tiny", set_, **extra)
    from arfm.evaluate.job import evaluate_run

    try:
        result = evaluate_run(job, run_id=run, model=model, n=n)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    for key, value in sorted(result["metrics"].items()):
        typer.echo(f"{key:40s} {value:.4f}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
