"""Run the study grid: data -> codec -> preprocess -> train AR and FM -> sampling searches -> generate + evaluate
-> report.

    python experiments/grid.py                       # the offline default (--preset quick)
    python experiments/grid.py --preset paper --only main
    ray job submit --working-dir . -- python experiments/grid.py --preset small

Every stage is idempotent: the dataset, codecs and shards are reused when present, and a cell whose MLflow
run finished (tag ``study_cell``) is skipped, so a rerun continues where the last one stopped. Cells of a
stage run concurrently as Ray tasks; each training cell asks Ray for its own workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STUDY_FILE = Path(__file__).with_name("study.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", help="study in experiments/study.yaml: quick | small | paper")
    p.add_argument("--study-file", default=str(STUDY_FILE), help="the matrix YAML")
    p.add_argument("--only", nargs="*", default=None, help="cell names, group names or substrings (e.g. fm-)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override for every job")
    p.add_argument("--stages", default="data,codec,preprocess,train,tune,evaluate,report",
                   help="comma-separated subset of the stages to run")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster, or a local Ray)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from arfm.config import ConfigError
    from arfm.study import home, load_study

    console = Console()
    if not console.is_terminal:  # a log file or a job's output: wide enough that table rows stay one line
        console = Console(width=160)
    try:
        study = load_study(args.study_file, args.preset, args.only)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    root = home()
    if args.list:
        for cell in study.cells:
            console.print(f"{cell.group:12s} {cell.name}")
        return 0

    from arfm.pipeline import StudyRunner

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    runner = StudyRunner(study, root, overrides=args.overrides, console=console, address=args.address)
    t0 = time.time()
    try:
        ok = runner.run(stages)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(f"study {study.name!r} finished in {time.time() - t0:.0f} s; results under {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
