"""The inference benchmark of section 5.4 (figures 5, 6, 7 and 10, and the five ratios): the same code as
``arfm bench`` (:mod:`arfm.serving.bench`).

Examples::

    python experiments/benchmarks/bench_inference.py --preset tiny --out runs/bench/tiny
    python experiments/benchmarks/bench_inference.py --preset paper --device cuda --out runs/bench/paper-gpu
    python experiments/benchmarks/bench_inference.py --only ratios --out runs/bench/ratios
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arfm.serving.bench import PARTS, PRESETS, run


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("::")[-1])
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="benchmark size")
    p.add_argument("--out", type=Path, default=Path("runs/bench/inference"), help="folder for bench.json and PNGs")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    args = p.parse_args(argv)
    report = run(args.preset, args.out, device=args.device, parts=args.only, log_mlflow=not args.no_mlflow)
    for key, r in report["ratios"].items():
        print(f"{key:24s} {r['value']:.3f}  (target {r['target']}: {'met' if r['met'] else 'MISSED'})")
    print(f"wrote {args.out / 'bench.json'}")
    return report


if __name__ == "__main__":
    main()
