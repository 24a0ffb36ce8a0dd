"""Speed of the synthetic dataset generator (`arfm data synth`) with 1 and 2 worker processes.

Writes N clips of S seconds (default 200 x 10 s, the default dataset) into a temporary folder per worker count
and reports wall time, clips/s and seconds of audio rendered per second, plus the CPU time one clip takes in
the parent process (compose + render + caption, no file I/O). The machine's load average is recorded next to
the figures: on a shared machine, wall times grow with it.

Examples::

    python experiments/benchmarks/bench_synth.py                          # 200 x 10 s, workers 1 and 2
    python experiments/benchmarks/bench_synth.py --n 40 --workers 2 --out runs/bench/synth_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from arfm.data.synth import generate_clip, synthesize_dataset


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("::")[-1])
    p.add_argument("--out", default="runs/bench/synth.json", help="JSON output path")
    p.add_argument("--n", type=int, default=200, help="clips per run")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.process_time()
    probe = 5
    for i in range(probe):
        generate_clip(args.seed, i, args.seconds)
    cpu_per_clip = (time.process_time() - t0) / probe

    runs = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = _load()
            start = time.perf_counter()
            synthesize_dataset(Path(tmp) / "d", n=args.n, seconds=args.seconds, seed=args.seed, workers=workers)
            wall = time.perf_counter() - start
        run = {"workers": workers, "wall_s": round(wall, 2), "clips_per_s": round(args.n / wall, 3),
               "audio_s_per_s": round(args.n * args.seconds / wall, 1), "loadavg_before": load_before,
               "loadavg_after": _load()}
        runs.append(run)
        print(json.dumps(run))
    result = {
        "benchmark": "synth", "n": args.n, "seconds": args.seconds, "cpu_s_per_clip": round(cpu_per_clip, 3),
        "runs": runs, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cpu per clip {cpu_per_clip:.3f} s; wrote {out}")
    return result


if __name__ == "__main__":
    main()
