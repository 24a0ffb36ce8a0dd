"""Training speed on the path the user's job takes: real shards, side by side in one run.

The benchmark prepares a small synthetic corpus of its own (``arfm data synth``), encodes it with an untrained
codec of the preset's size into Parquet shards (``arfm data preprocess``), and trains the preset's AR or FM model
on those shards four ways, alternating in rounds so that a load change on a shared machine hits all of them:

- ``bare``: forward + backward + AdamW on batches already in memory as tensors (the step the model allows);
- ``local``: the plain single-process loop (``arfm train --local``: the shards read once, epochs in memory);
- ``ray_1w``: ``run_training`` (``arfm train``) on Ray Train + DeepSpeed with 1 worker (ZeRO-0);
- ``ray_2w_zero2``: the same with 2 workers and ZeRO-2 (gloo on CPU; each worker gets half the batch).

Each reports steady-state steps/s (steps after ``--warmup``; the trainer's from the windows its rank-0 worker
logs to MLflow, with no checkpoint inside them) and the fraction of step time spent waiting for data
(``data_wait_frac``: the median over the measured windows). ``ratio`` is steps/s over ``bare`` of the same round
(median over rounds). All use ``--threads`` torch threads per process (Ray workers: ``cpus_per_worker``). The
JSON goes to ``--out`` and a bar chart next to it (``.png``).

Examples::

    python experiments/benchmarks/bench_trainer.py                      # tiny AR, 1 and 2 workers
    python experiments/benchmarks/bench_trainer.py --paradigm fm --out runs/bench/trainer_fm.json
    python experiments/benchmarks/bench_trainer.py --paths bare local ray_1w --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("bare", "local", "ray_1w", "ray_2w_zero2")


def prepare_shards(home: Path, preset: str, clips: int, seconds: float) -> Path:
    """A synthetic corpus, an untrained codec of the preset's size and its shards under ``home``."""
    from arfm.config import resolve
    from arfm.data.preprocess import preprocess
    from arfm.data.synth import synthesize_dataset
    from arfm.latents import Codec

    cfg = resolve(preset, overrides=[f"data.segment_seconds={seconds}"])
    data, shards = home / "data", home / "shards"
    if not (data / "manifest.jsonl").exists():
        synthesize_dataset(data, n=clips, seconds=seconds, seed=0, workers=2, valid_fraction=0.1)
    if not (shards / "meta.json").exists():
        preprocess(cfg, data, Codec.from_config(cfg.codec, cfg.data.sample_rate), shards, progress=False)
    return shards


def job(args, shards: Path, workers: int = 1, zero: int = 0):
    from arfm.config import resolve

    return resolve(args.preset, overrides=[
        f"model.paradigm={args.paradigm}", f"data.shards={shards}", f"data.segment_seconds={args.seconds}",
        f"train.steps={args.warmup + args.steps}", f"train.batch_size={args.batch_size}",
        f"train.log_every={args.log_every}", f"train.checkpoint_every={10 * (args.warmup + args.steps)}",
        f"train.workers={workers}", f"train.zero_stage={zero}", f"train.cpus_per_worker={args.threads}",
        "train.warmup_steps=5", "train.valid_every=0", "tracking.register_models=false", "name=bench"])


def bare(args, shards: Path) -> dict[str, Any]:
    """The step alone: rows already collated in memory, a random batch gathered by index each step."""
    import torch

    from arfm.train.engine import lr_lambda
    from arfm.train.task import get_task

    cfg = job(args, shards)
    torch.set_num_threads(args.threads)
    task = get_task(args.paradigm)
    rows = task.read_rows(cfg, "train")
    tensors = task.collate(cfg, {k: v for k, v in rows.items() if k != "id"})
    n = len(next(iter(tensors.values())))
    torch.manual_seed(cfg.train.seed)
    model = task.build_model(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters()], lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    g = torch.Generator().manual_seed(0)
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        idx = torch.randint(0, n, (args.batch_size,), generator=g)
        loss = model({k: v.index_select(0, idx) for k, v in tensors.items()})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
    return {"steps_per_s": args.steps / (time.perf_counter() - start), "data_wait_frac": 0.0}


def local(args, shards: Path) -> dict[str, Any]:
    import torch

    from arfm.train.local import train_local

    torch.set_num_threads(args.threads)
    cfg = job(args, shards)
    hist: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    train_local(cfg, args.paradigm, log=None, history=hist)
    windows = [h for h in hist if h["step"] > args.warmup]
    seconds = sum(args.log_every / h["steps_per_s"] for h in windows)
    return {"steps_per_s": len(windows) * args.log_every / seconds,
            "data_wait_frac": float(np.median([h["data_wait_frac"] for h in windows])),
            "wall_s": time.perf_counter() - t0}


def ray_trainer(args, shards: Path, workers: int, zero: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from arfm.train.trainer import run_training

    t0 = time.perf_counter()
    result = run_training(job(args, shards, workers, zero), args.paradigm)
    wall = time.perf_counter() - t0
    c = MlflowClient(result["tracking_uri"])

    def hist(key):
        return [m.value for m in sorted(c.get_metric_history(result["run_id"], key), key=lambda m: m.step)
                if m.step > args.warmup]

    rates = hist("steps_per_s")
    seconds = sum(args.log_every / v for v in rates)
    return {"steps_per_s": len(rates) * args.log_every / seconds,
            "data_wait_frac": float(np.median(hist("data_wait_frac"))), "wall_s": wall,
            "engine": result["metrics"].get("engine"), "data_mode": c.get_run(result["run_id"]).data.tags.get(
                "data_mode")}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p for p in PATHS if p in report["results"]]
    rate = [report["results"][p]["steps_per_s"] for p in names]
    wait = [report["results"][p]["data_wait_frac"] for p in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.bar(names, rate, color="#4C72B0")
    for i, p in enumerate(names):
        a.text(i, rate[i], f"{report['ratios'][p]:.2f}x", ha="center", va="bottom")
    a.set_ylabel("steps/s (median of rounds)")
    a.set_title(f"{report['paradigm'].upper()} {report['preset']}: steps/s, ratio to bare")
    b.bar(names, wait, color="#DD8452")
    b.axhline(0.05, color="k", ls="--", lw=1, label="0.05 target")
    b.set_ylabel("data_wait_frac (median)")
    b.set_title("time waiting for data")
    b.legend()
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("::")[-1])
    ap.add_argument("--out", default="runs/bench/trainer.json", help="JSON output path (the PNG goes beside it)")
    ap.add_argument("--paradigm", default="ar", choices=["ar", "fm"])
    ap.add_argument("--preset", default="tiny", help="config preset for the model, codec and text sizes")
    ap.add_argument("--clips", type=int, default=96, help="synthetic clips in the benchmark's corpus")
    ap.add_argument("--seconds", type=float, default=4.0, help="clip and segment length")
    ap.add_argument("--batch-size", type=int, default=8, help="global batch size")
    ap.add_argument("--warmup", type=int, default=40, help="steps not measured (all paths)")
    ap.add_argument("--steps", type=int, default=200, help="measured steps (a multiple of --log-every)")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process = CPUs per Ray worker")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the paths; medians are reported")
    ap.add_argument("--home", default=None, help="where the corpus, shards and runs go (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.steps % args.log_every or args.warmup % args.log_every:
        ap.error("--steps and --warmup must be multiples of --log-every")

    home = Path(args.home or tempfile.mkdtemp(prefix="arfm-bench-trainer-"))
    os.environ["ARFM_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import ray
    import torch

    shards = prepare_shards(home, args.preset, args.clips, args.seconds)
    load_before = os.getloadavg()
    if any(p.startswith("ray") for p in args.paths) and not ray.is_initialized():
        ray.init(num_cpus=max(2, 2 * args.threads), include_dashboard=False, log_to_driver=False)
    runs = {"bare": lambda: bare(args, shards), "local": lambda: local(args, shards),
            "ray_1w": lambda: ray_trainer(args, shards, 1, 0),
            "ray_2w_zero2": lambda: ray_trainer(args, shards, 2, 2)}
    trials: dict[str, list[dict[str, Any]]] = {p: [] for p in args.paths}
    for round_ in range(args.rounds):
        for p in args.paths:
            r = runs[p]()
            trials[p].append(r)
            print(f"[round {round_}] {p:13s} {r['steps_per_s']:7.2f} steps/s  data_wait_frac "
                  f"{r['data_wait_frac']:.3f}", flush=True)
    if ray.is_initialized():
        ray.shutdown()

    def med(p, k):
        return float(np.median([r[k] for r in trials[p]]))

    results = {p: {"steps_per_s": med(p, "steps_per_s"), "data_wait_frac": med(p, "data_wait_frac")}
               for p in args.paths}
    ratios = {}
    if "bare" in trials:
        ratios = {p: float(np.median([t["steps_per_s"] / b["steps_per_s"] for t, b in zip(trials[p], trials["bare"])]))
                  for p in args.paths}
    meta_rows = json.loads((shards / "meta.json").read_text())["splits"]
    report = {
        "benchmark": "trainer", "paradigm": args.paradigm, "preset": args.preset, "batch_size": args.batch_size,
        "warmup_steps": args.warmup, "measured_steps": args.steps, "threads_per_process": args.threads,
        "rounds": args.rounds, "corpus": {"clips": args.clips, "seconds": args.seconds, "rows": meta_rows},
        "results": results, "ratios": ratios, "trials": trials,
        "method": "steady-state steps/s after the warmup steps; data_wait_frac = time in next(batch) / window time; "
                  "medians over rounds; ratio = steps/s / bare steps/s of the same round (median)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    if args.home is None:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"results": results, "ratios": ratios}, indent=1))
    return report


if __name__ == "__main__":
    main()
