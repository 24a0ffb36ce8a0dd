"""``arfm data``: build dataset folders (synthetic music or your own audio) for the preprocessing job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job


def _progress(label: str):
    """A rich progress bar as ``(context manager, callback(done, total))``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def synth(
    n: Annotated[Optional[int], typer.Option("--n", "-n", help="clips (default: data.synth_clips)")] = None,
    seconds: Annotated[Optional[float], typer.Option(help="clip length (default: data.synth_seconds)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder (default: data.dataset)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="same seed, same bytes (default: data.seed)")] = None,
    workers: Annotated[int, typer.Option(help="processes rendering in parallel")] = 2,
    genre: Annotated[Optional[str], typer.Option(help="only this style (pop, rock, jazz, lofi, house, ...)")] = None,
    valid_fraction: Annotated[Optional[float], typer.Option(help="share of clips in the valid split")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate procedural music with exact labels (chords, melody, beats) and captions.

    Writes DIR/audio/<id>.wav (32 kHz mono PCM_16) and DIR/manifest.jsonl.
    Each clip depends only on (seed, index): the same seed gives
    byte-identical files whatever --workers is.

    Examples:
      arfm data synth --n 8 --seconds 10 --out runs/data/demo --seed 0
      arfm data synth --preset tiny     # 48 clips of 4 s into data.dataset
      arfm data synth --n 200 --genre jazz --out runs/data/jazz
    """
    from arfm.data.synth import GENRES, synthesize_dataset

    cfg = load_job(config, preset, set_)
    d = cfg.data
    n = d.synth_clips if n is None else n
    seconds = d.synth_seconds if seconds is None else seconds
    out = Path(d.dataset) if out is None else out
    seed = d.seed if seed is None else seed
    valid_fraction = d.valid_fraction if valid_fraction is None else valid_fraction
    if n < 1:
        fail(f"--n must be >= 1 (got {n})")
    if not 0 < seconds <= 600:
        fail(f"--seconds must be in (0, 600] (got {seconds})")
    if seed < 0:
        fail(f"--seed must be >= 0 (got {seed})")
    if workers < 1:
        fail(f"--workers must be >= 1 (got {workers})")
    if not 0 <= valid_fraction < 1:
        fail(f"--valid-fraction must be in [0, 1) (got {valid_fraction})")
    if genre is not None and genre not in GENRES:
        fail(f"--genre must be one of {', '.join(GENRES)} (got {genre!r})")
    t0 = time.perf_counter()
    bar, update = _progress("synth")
    with bar:
        rows = synthesize_dataset(out, n=n, seconds=seconds, seed=seed, workers=workers, sample_rate=d.sample_rate,
                                  valid_fraction=valid_fraction, genre=genre, progress=update)
    took = time.perf_counter() - t0
    n_valid = sum(r["split"] == "valid" for r in rows)
    typer.echo(f"wrote {len(rows)} clips ({len(rows) * seconds:.0f} s of audio; {len(rows) - n_valid} train, "
               f"{n_valid} valid) to {out} in {took:.1f} s; manifest: {out / 'manifest.jsonl'}")


def ingest(
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset folder to write")],
    manifest: Annotated[Optional[Path], typer.Option(help=".jsonl or .csv with path, caption[, split]")] = None,
    folder: Annotated[Optional[Path], typer.Option(help="folder of audio files with sidecar .txt captions")] = None,
    segment_seconds: Annotated[Optional[float], typer.Option(help="(default: data.segment_seconds)")] = None,
    valid_fraction: Annotated[Optional[float], typer.Option(help="share of files (when no split column)")] = None,
    min_rms_db: Annotated[float, typer.Option(help="files and segments quieter than this are silent")] = -60.0,
    workers: Annotated[int, typer.Option(help="processes decoding in parallel")] = 2,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ingest your own audio: decode, resample to mono, cut into segments.

    Audio is resampled to data.sample_rate (32 kHz) and cut into segments of
    --segment-seconds; a shorter remainder is dropped. Unusable files
    (missing, truncated, unreadable, too short, silent) are skipped and
    listed with their reason in DIR/report.json and in a table here.
    A row without a caption stops the job and names the row.

    Examples:
      arfm data ingest --manifest corpus.jsonl --out runs/data/mine
      arfm data ingest --manifest corpus.csv --out D --segment-seconds 10
      arfm data ingest --folder ~/music --out D   # song.wav + song.txt
    """
    from arfm.data.ingest import IngestError, folder_sources, read_sources
    from arfm.data.ingest import ingest as run_ingest

    cfg = load_job(config, preset, set_)
    if (manifest is None) == (folder is None):
        fail("give exactly one of --manifest FILE or --folder DIR")
    seg = cfg.data.segment_seconds if segment_seconds is None else segment_seconds
    vf = cfg.data.valid_fraction if valid_fraction is None else valid_fraction
    if not 0 < seg <= 3600:
        fail(f"--segment-seconds must be in (0, 3600] (got {seg})")
    if not 0 <= vf < 1:
        fail(f"--valid-fraction must be in [0, 1) (got {vf})")
    if workers < 1:
        fail(f"--workers must be >= 1 (got {workers})")
    try:
        sources = read_sources(manifest) if manifest is not None else folder_sources(folder)
    except IngestError as exc:
        fail(str(exc), code=1)
    t0 = time.perf_counter()
    bar, update = _progress("ingest")
    with bar:
        report = run_ingest(sources, out, sample_rate=cfg.data.sample_rate, segment_seconds=seg, valid_fraction=vf,
                            min_rms_db=min_rms_db, workers=workers, progress=update)
    _print_report(report, out, time.perf_counter() - t0)
    if report["segments"] == 0:
        fail(f"no usable audio: all {report['files']} file(s) were skipped (see {out / 'report.json'})", code=1)


def _print_report(report: dict, out: Path, took: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if report["skipped"]:
        table = Table(title=f"skipped {len(report['skipped'])} file(s)")
        for col in ("row", "path", "reason"):
            table.add_column(col, overflow="fold")
        for s in report["skipped"]:
            table.add_row(str(s["row"]), s["path"], s["reason"])
        console.print(table)
    console.print(f"ingested {report['files_ok']}/{report['files']} file(s) into {report['segments']} segment(s) "
                  f"of {report['segment_seconds']:g} s (train {report['splits']['train']}, valid "
                  f"{report['splits']['valid']}; {report['silent_segments_dropped']} silent segment(s) dropped) "
                  f"in {took:.1f} s -> {out}; report: {out / 'report.json'}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Build dataset folders: synthetic music with labels, or your own audio.",
                           no_args_is_help=True)
    data_app.command("synth")(synth)
    data_app.command("ingest")(ingest)
    try:
        from arfm.cli.preprocess import register_preprocess
    except ModuleNotFoundError as exc:
        if exc.name != "arfm.cli.preprocess":
            raise
    else:
        register_preprocess(data_app)
    app.add_typer(data_app, name="data")
