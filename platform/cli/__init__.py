"""The ``arfm`` command. Thin: it parses arguments and hands over to the modules that do the work.

Each capability lives in its own module under ``arfm.cli`` and registers its subcommands here; heavy
libraries (torch, ray, mlflow) are imported inside the commands so that ``arfm --help`` stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="arfm",
    help="Compare auto-regressive and flow-matching text-to-music models on one latent space.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from arfm.cli import config_cmd

    app.add_typer(config_cmd.app, name="config")
    # Subcommand groups land here as each capability is built; a missing module means "not built yet".
    import importlib

    for module, name in [
        ("arfm.cli.data", "data"),
        ("arfm.cli.codec", "codec"),
        ("arfm.cli.train", "train"),
        ("arfm.cli.generate", "generate"),
        ("arfm.cli.evaluate", "evaluate"),
        ("arfm.cli.report", "report"),
        ("arfm.cli.serve", "serve"),
        ("arfm.cli.listening", "study"),
    ]:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
