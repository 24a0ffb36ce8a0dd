"""``arfm study``: listening studies, the human ratings of the paper's table 5 (section 5.3).

Not the experiment grid: the grid's cells ("study cells", ``experiments/study.yaml``) are run by
``python experiments/grid.py``; ``arfm study`` asks people to rate the clips those runs made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import fail
from arfm.listening.spec import DEFAULT_HOST, DEFAULT_PORT

app = typer.Typer(help="Listening studies: people rate generated clips 1-10 (the paper's table 5). Not the "
                  "experiment grid (experiments/grid.py).", no_args_is_help=True)

DbOpt = Annotated[Optional[str], typer.Option("--db", help="SQLAlchemy URL of the study database (default: "
                                              "$ARFM_LISTENING_DB or sqlite:///<ARFM_HOME>/listening/listening.db)")]
UriOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI "
                                               "or <ARFM_HOME>/mlflow.db)")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="study")


def _study_dir(name: str, folder: Optional[Path]) -> Path:
    from arfm.tracking import home

    return (folder or home() / "listening" / name).resolve()


def _open(db: Optional[str], name: str):
    from arfm.listening.store import NotFound, Store

    store = Store(db)
    try:
        return store, store.study(name)
    except NotFound as exc:
        fail(str(exc))


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="study name (letters, digits, - and _)")],
    task: Annotated[str, typer.Option(help="inpainting (table 5) | quality (overall quality and text match)")]
    = "inpainting",
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e", help="take table 5's systems from this "
                                                      "experiment's newest evaluated runs")] = None,
    system: Annotated[Optional[list[str]], typer.Option("--system", help="LABEL=RUN_ID[:VARIANT] or LABEL=reference "
                                                        "(repeatable, in table order)")] = None,
    judgments: Annotated[int, typer.Option(help="judgments wanted per system and criterion")] = 250,
    items_per_rater: Annotated[int, typer.Option(help="items each rater scores, anchors included")] = 20,
    anchors: Annotated[int, typer.Option(help="hidden reference anchors per rater (and as many degraded)")] = 2,
    anchor_margin: Annotated[float, typer.Option(help="a rater is kept when their reference-anchor mean is this "
                                                 "far above their degraded-anchor mean")] = 3.0,
    n: Annotated[Optional[int], typer.Option("--n", help="prompts (default: every clip the runs logged)")] = None,
    generate: Annotated[bool, typer.Option(help="generate --n clips per system through the evaluation job's "
                                           "generation instead of using the logged ones")] = False,
    seed: Annotated[int, typer.Option(help="seeds the raters' item orders (and generation)")] = 0,
    title: Annotated[str, typer.Option(help="the page's title")] = "Listening test",
    folder: Annotated[Optional[Path], typer.Option("--dir", help="study folder: media/ and admin-token (default "
                                                   "<ARFM_HOME>/listening/NAME)")] = None,
    db: DbOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Build a study from MLflow runs: one blinded clip per system and prompt, plus anchor clips.

    Examples:

      arfm study create table5 --experiment arfm-quick

      arfm study create t5 --system GT=reference --system AR=0123...:inpaint --system FM=4567...:inpaint

      arfm study create ovl --task quality --experiment arfm-quick --generate --n 32
    """
    import re

    from pydantic import ValidationError

    from arfm.config import format_validation_error
    from arfm.listening.create import build_study, default_systems, parse_system
    from arfm.listening.spec import StudySettings
    from arfm.listening.store import Store, StoreError
    from arfm.tracking import tracking_uri as default_uri

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        fail(f"study name {name!r}: letters, digits, - and _ only")
    if bool(experiment) == bool(system):
        fail("give --experiment EXP (table 5's systems) or --system LABEL=RUN_ID[:VARIANT] ...")
    uri = tracking_uri or default_uri()
    try:
        settings = StudySettings(task=task, title=title, judgments_per_cell=judgments, items_per_rater=items_per_rater,
                                 anchors_per_rater=anchors, anchor_margin=anchor_margin, seed=seed)
    except ValidationError as exc:
        fail(format_validation_error(exc))
    store = Store(db)
    if name in store.names():
        fail(f"a study named {name!r} exists in {store.safe_url}")
    out = _study_dir(name, folder)
    try:
        systems = default_systems(uri, experiment, task) if experiment else [parse_system(s) for s in system]
        built = build_study(name, settings, systems, uri, out / "media", n=n, generate=generate,
                            progress=lambda m: typer.echo(m, err=True))
        settings.experiment = built["experiment"]
        token = store.create_study(name, settings, built["systems"], built["prompts"], built["clips"], out / "media")
    except (ValueError, FileNotFoundError, StoreError) as exc:
        fail(str(exc))
    token_file = out / "admin-token"
    fd = os.open(token_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    n_test = sum(c["kind"] == "test" for c in built["clips"])
    typer.echo(f"study {name!r} ({task}) stored in {store.safe_url}: {len(built['systems'])} systems x "
               f"{len(built['prompts'])} prompts = {n_test} clips, {len(built['clips']) - n_test} anchor clips")
    typer.echo(f"{settings.raters_needed(len(systems))} raters finishing {items_per_rater} items each give "
               f"{judgments} judgments per system and criterion")
    typer.echo(f"admin token (for the admin API) in {token_file} (readable by you only)")
    typer.echo(f"next: arfm study invite {name} --n 5, then arfm study serve {name}")


@app.command("invite")
def invite(
    name: str,
    n: Annotated[int, typer.Option("--n", help="number of rater links")] = 1,
    base_url: Annotated[str, typer.Option(help="where raters reach the server")]
    = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
    db: DbOpt = None,
) -> None:
    """Create rater links: each an unguessable token with its own seeded, recorded item order."""
    if not 1 <= n <= 1000:
        fail(f"--n must be 1..1000 (got {n})")
    store, study = _open(db, name)
    try:
        tokens = store.add_raters(study, n)
    except ValueError as exc:
        fail(str(exc))
    for t in tokens:
        typer.echo(f"{base_url.rstrip('/')}/r/{t}")


@app.command("serve")
def serve(
    name: str,
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 unless raters reach it otherwise")]
    = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="port")] = DEFAULT_PORT,
    base_url: Annotated[str, typer.Option(help="base of the links the admin API returns (default: as requested)")]
    = "",
    db: DbOpt = None,
) -> None:
    """Serve the rater page and the admin API (uvicorn; route templates are logged, never tokens)."""
    from arfm.listening.app import serve as run

    store, _ = _open(db, name)
    store.close()
    run(db, name, host=host, port=port, base_url=base_url)


@app.command("status")
def status(name: str, db: DbOpt = None) -> None:
    """Raters, items rated and judgments per system and criterion so far (before screening)."""
    store, study = _open(db, name)
    p = store.progress(study)
    typer.echo(f"{name}: {p['raters']} raters, {p['items_rated']} of {p['items_assigned']} items rated; "
               f"{study.settings.judgments_per_cell} judgments wanted per cell")
    for s in study.systems:
        for c in study.settings.criteria:
            typer.echo(f"  {s:20s} {c.label:24s} {p['judgments'].get(f'{s}/{c.key}', 0)}")


@app.command("results")
def results(
    name: str,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder (default <study dir>/results)")] = None,
    log: Annotated[bool, typer.Option("--log/--no-log", help="log to MLflow (a run tagged job=listening)")] = True,
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e", help="MLflow experiment (default: the "
                                                      "experiment of the study's runs)")] = None,
    folder: Annotated[Optional[Path], typer.Option("--dir", help="study folder")] = None,
    db: DbOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Screen raters by the anchors, then n, mean and 95% t interval per system and criterion: table5.md,
    table5.png, results.json and judgments.csv (every judgment), logged to MLflow for `arfm report`."""
    from arfm.listening.results import compute, log_results, table_markdown, write_results
    from arfm.tracking import tracking_uri as default_uri

    store, study = _open(db, name)
    res = compute(store, study)
    out = out or _study_dir(name, folder) / "results"
    files = write_results(res, out)
    typer.echo(table_markdown(res))
    for f in files:
        typer.echo(f"written: {f}")
    if log:
        exp = experiment or study.settings.experiment
        if not exp:
            fail("--experiment: the study records no MLflow experiment")
        run_id = log_results(res, out, tracking_uri or default_uri(), exp)
        typer.echo(f"logged to MLflow run {run_id} of {exp!r} (artifact path listening/)")
