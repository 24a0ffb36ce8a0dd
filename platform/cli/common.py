"""Options shared by every job subcommand: ``--config``, ``--preset`` and repeated ``--set key=value``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML job config (sections: data, codec, model, ...)")
]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="tiny | small | paper")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="override one field, e.g. --set model.layers=4 (repeatable)"),
]


def load_job(config: Optional[Path], preset: Optional[str], overrides: Optional[list[str]], **extra):
    """Resolve the job config or exit 2 with a message naming the bad field."""
    from arfm.config import ConfigError, resolve

    try:
        return resolve(preset=preset, config_file=config, overrides=overrides or [], extra=extra or None)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)
