"""``arfm config show``: print the resolved job config, the same one a job would run with."""

from __future__ import annotations

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, load_job

app = typer.Typer(help="Inspect job configurations.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config as YAML.

    Examples:
      arfm config show --preset tiny
      arfm config show --preset paper --set model.paradigm=fm --set sample.solver=dopri5
    """
    from arfm.config import dump_yaml

    typer.echo(dump_yaml(load_job(config, preset, set_)))


@app.command("presets")
def presets() -> None:
    """List the presets."""
    from arfm.config import PRESETS

    for name in PRESETS:
        typer.echo(name)
