"""``arfm tune``: a sampling search (appendix D) over one trained model with Ray Tune, tracked in MLflow."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail


def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="saved-model folder, runs:/RUN_ID/model, "
                                       "models:/NAME/VERSION or an MLflow run id")],
    space: Annotated[str, typer.Option("--space", help="ar | fm (the paper's spaces, appendix D) or a search "
                                       "YAML file")],
    resume: Annotated[bool, typer.Option("--resume", help="continue the interrupted search of this name")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="the search's name (default: space and run)")] = None,
    prompts: Annotated[Optional[int], typer.Option("--prompts", help="validation prompts per trial (default: "
                                                   "the space file's)")] = None,
    no_attach: Annotated[bool, typer.Option("--no-attach", help="record the best only on the search's run, "
                                            "not as the model's default sampling")] = False,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Search sampling settings (CFG, temperature, top-p/top-k, solver and steps) of a trained model.

    Every trial generates the same validation prompts with the same seeds and scores them as `arfm evaluate`
    does (objective: FAD unless the space file says otherwise), with the cost (seconds and NFE per sample).
    MLflow: one parent run for the search, one child run per trial. The best complete trial is logged on the
    parent run (tune/best.yaml) and attached to the model's run (tag tune/best_sample; a registered version
    also gets the alias `tuned`): `arfm evaluate`, the grid and `arfm serve` then sample with it unless told
    otherwise (--set sample.* wins; `arfm evaluate --untuned` ignores it). Settings: the model run's own config,
    then the sample / eval / tracking sections of --preset, --config and --set, as for `arfm evaluate`.

    Examples:
      arfm tune --model 0123abcd... --space fm
      arfm tune --model models:/arfm-ar/3 --space ar --prompts 16 --set sample.seconds=5
      arfm tune --model 0123abcd... --space my_space.yaml --resume
    """
    from arfm.config import ConfigError
    from arfm.evaluate.job import user_layer
    from arfm.tune.search import run_search
    from arfm.tune.space import load_spec

    try:
        spec = load_spec(space)
        if prompts is not None:
            spec = spec.model_validate({**spec.model_dump(), "prompts": prompts})
        layer = user_layer(preset, config, set_ or [])
        result = run_search(model, spec, layer=layer, name=name, resume=resume, attach=not no_attach)
    except ConfigError as exc:
        fail(str(exc))
        return
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    for note in result.notes:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    from arfm.tune.record import trials_table

    typer.echo(trials_table(result.trials, result.best))
    typer.echo(f"search run {result.parent_run_id} ({result.uri}); Tune experiment {result.path}")
    if result.best is None:
        fail("no trial scored every prompt: no best configuration recorded", code=1)
    where = f"attached to run {result.attached_to}" if result.attached_to else (
        "not attached (--no-attach)" if no_attach else "not attached: the model is a folder, not an MLflow run")
    typer.echo(f"best: trial {result.best['trial_id']} {result.best['sample']} ({where})")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)

