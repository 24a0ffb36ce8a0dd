"""``arfm report``: the study's tables and figures from the runs of one MLflow experiment (issue 6, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job


def register(root: typer.Typer) -> None:
    root.command("report")(report)


def report(
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e",
                                                      help="MLflow experiment (default: tracking.experiment)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default: <ARFM_HOME>/reports/"
                                                "<experiment>)")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow store (default: tracking.uri, "
                                                        "$MLFLOW_TRACKING_URI or <ARFM_HOME>/mlflow.db)")] = None,
    log: Annotated[bool, typer.Option("--log/--no-log", help="log report.md and the PNGs to a run tagged "
                                      "job=report")] = True,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write report.md and PNG plots: counterparts of tables 2, 3, 4, 7, 8, figures 3, 8, 9 and appendix B,
    each row with n and a 95% interval; grid cells without a run say "not run".

    Examples:

      arfm report --experiment arfm-quick

      arfm report --experiment arfm-small --out runs/reports/small --no-log

      arfm report --preset tiny --set tracking.experiment=arfm-quick
    """
    from arfm.evaluate.report import write_report
    from arfm.evaluate.runs import ReportError
    from arfm.tracking import tracking_uri as default_uri

    cfg = load_job(config, preset, set_)
    uri = tracking_uri or default_uri(cfg)
    name = experiment or cfg.tracking.experiment
    try:
        rep = write_report(name, out=out, uri=uri, log=log, progress=lambda m: typer.echo(m, err=True))
    except ReportError as exc:
        fail(str(exc))
    typer.echo(f"report written to {rep.path}")
    for fig in rep.figures:
        typer.echo(f"figure: {fig}")
    if rep.run_id:
        typer.echo(f"logged to MLflow run {rep.run_id} (artifact path report/)")
