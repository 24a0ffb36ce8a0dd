"""Training speed: the Ray Train + DeepSpeed trainer against a plain single-process PyTorch loop, side by side.

Both train the same randomly initialised model (the real tiny AR or FM backbone of ``--preset``) on the same
synthetic rows (tokens, latents, text features shaped like the shards), with the same optimiser (AdamW, warmup
then cosine, gradient clipping) and the same number of torch threads (``--threads``, default 1 = one Ray CPU
worker). Steady-state steps/s skips ``--warmup`` steps on both sides: for the trainer it comes from the step
windows its rank-0 worker logs to MLflow (no checkpoint inside the measured steps); the end-to-end wall time
(Ray start, worker start, DeepSpeed init, final checkpoint, MLflow) is reported separately. ``ratio`` is
trainer / plain steady-state steps/s of the best of ``--repeat`` alternating rounds (all rounds are kept under
``trials``, with ``median_ratios``). The machine's load average is recorded because it may be shared.

Examples::

    python experiments/benchmarks/bench_trainer.py                            # tiny AR, 1 CPU worker
    python experiments/benchmarks/bench_trainer.py --paradigm fm --steps 100 --out runs/bench/trainer_fm.json
    python experiments/benchmarks/bench_trainer.py --configs 1:0 2:2          # also 2 workers, ZeRO-2 (gloo)
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


def synthetic_meta(frames: int) -> dict[str, Any]:
    return {"n_codebooks": 4, "codebook_size": 256, "latent_dim": 32, "n_frames": frames, "text_dim": 64,
            "text_len": 8, "controls": [], "frame_rate": 50.0}


def synthetic_rows(meta: dict[str, Any], n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    k, t, d = meta["n_codebooks"], meta["n_frames"], meta["latent_dim"]
    L, dt = meta["text_len"], meta["text_dim"]
    return [{"tokens": rng.integers(0, meta["codebook_size"], k * t).astype(np.int16),
             "latent": rng.normal(size=t * d).astype(np.float32),
             "text": rng.normal(size=L * dt).astype(np.float32),
             "text_mask": np.arange(L) < rng.integers(2, L + 1)} for _ in range(n)]


class SyntheticTask:
    """A Task over synthetic shard-like rows for the real tiny backbone (no data files needed)."""

    def __init__(self, paradigm: str, frames: int, rows: int):
        self.name, self.frames, self.rows = paradigm, frames, rows

    def tags(self, cfg):
        return {"paradigm": f"bench-{self.name}"}

    def build_model(self, cfg):
        from arfm.modeling import build_generative

        return build_generative(cfg, synthetic_meta(self.frames))

    def train_dataset(self, cfg):
        import ray.data

        return ray.data.from_items(synthetic_rows(synthetic_meta(self.frames), self.rows))

    def collate(self, cfg, batch):
        from arfm.data.loader import collate

        return collate(batch, synthetic_meta(self.frames))

    def finalize(self, cfg, model, out_dir):
        import torch

        torch.save(model.state_dict(), Path(out_dir) / "weights.pt")
        return {}


def plain_loop(cfg, task: SyntheticTask, warmup: int, steps: int, threads: int) -> dict[str, Any]:
    """The same training in this process: no Ray, no DeepSpeed, no MLflow, no checkpoints."""
    import torch

    from arfm.train.trainer import lr_lambda

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    t = cfg.train
    torch.manual_seed(t.seed)
    model = task.build_model(cfg).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=tuple(t.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    rows = synthetic_rows(synthetic_meta(task.frames), task.rows)
    rng = np.random.default_rng(t.seed)

    def batches():
        while True:
            order = rng.permutation(len(rows))
            for i in range(0, len(rows) - t.batch_size + 1, t.batch_size):
                chunk = [rows[j] for j in order[i:i + t.batch_size]]
                yield task.collate(cfg, {k: np.stack([r[k] for r in chunk]) for k in chunk[0]})

    it = batches()
    losses, start = [], None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss = model(next(it))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    dt = time.perf_counter() - start
    return {"steps_per_s": steps / dt, "samples_per_s": steps * t.batch_size / dt,
            "wall_s": time.perf_counter() - t0, "first_loss": losses[0], "last_loss": losses[-1]}


def ray_trainer(cfg, task: SyntheticTask, warmup: int, steps: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from arfm.train.trainer import run_training

    t0 = time.perf_counter()
    result = run_training(cfg, task)
    wall = time.perf_counter() - t0
    hist = sorted(MlflowClient(result["tracking_uri"]).get_metric_history(result["run_id"], "steps_per_s"),
                  key=lambda m: m.step)
    windows = [(m.step, m.value) for m in hist if m.step > warmup]  # windows of log_every steps after warmup
    every = cfg.train.log_every
    seconds = sum(every / v for _, v in windows)
    c = MlflowClient(result["tracking_uri"])
    waits = [m.value for m in c.get_metric_history(result["run_id"], "data_wait_frac") if m.step > warmup]
    return {"steps_per_s": len(windows) * every / seconds,
            "data_wait_frac": float(np.mean(waits)) if waits else None, "samples_per_s": len(windows) * every *
            cfg.train.batch_size / seconds, "wall_s": wall, "windows": len(windows),
            "engine": result["metrics"].get("engine"), "last_loss": result["metrics"].get("loss"),
            "attempts": len(result["attempts"])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("::")[-1])
    ap.add_argument("--out", default="runs/bench/trainer.json", help="JSON output path")
    ap.add_argument("--paradigm", default="ar", choices=["ar", "fm"])
    ap.add_argument("--preset", default="tiny", help="config preset for the backbone size")
    ap.add_argument("--frames", type=int, default=100, help="latent frames per example (100 = 2 s at 50 Hz)")
    ap.add_argument("--rows", type=int, default=640, help="synthetic examples (>= (warmup+steps) x batch: one epoch)")
    ap.add_argument("--batch-size", type=int, default=8, help="global batch size")
    ap.add_argument("--warmup", type=int, default=10, help="steps not measured (both sides)")
    ap.add_argument("--steps", type=int, default=60, help="measured steps (a multiple of --log-every)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the plain loop = CPUs per worker")
    ap.add_argument("--configs", nargs="+", default=["1:0"], help="trainer settings WORKERS:ZERO_STAGE")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (plain, then each trainer setting); best kept")
    ap.add_argument("--home", default=None, help="ARFM_HOME for the trainer's runs (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.steps % args.log_every or args.warmup % args.log_every:
        ap.error("--steps and --warmup must be multiples of --log-every")

    home = args.home or tempfile.mkdtemp(prefix="arfm-bench-trainer-")
    os.environ["ARFM_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import ray
    import torch

    from arfm.config import resolve

    def job(workers: int, zero: int):
        return resolve(args.preset, overrides=[
            f"model.paradigm={args.paradigm}", f"train.steps={args.warmup + args.steps}",
            f"train.batch_size={args.batch_size}", f"train.log_every={args.log_every}",
            f"train.checkpoint_every={10 * (args.warmup + args.steps)}", f"train.workers={workers}",
            f"train.zero_stage={zero}", f"train.cpus_per_worker={args.threads}", "train.warmup_steps=5",
            "tracking.register_models=false", "name=bench"])

    task = SyntheticTask(args.paradigm, args.frames, args.rows)
    cfg = job(1, 0)
    n_params = sum(p.numel() for p in task.build_model(cfg).parameters())
    load_before = os.getloadavg()
    ray.init(num_cpus=max(2, max(int(c.split(":")[0]) for c in args.configs) * args.threads),
             include_dashboard=False, log_to_driver=False)
    trials: dict[str, list[dict[str, Any]]] = {"plain": []}
    for round_ in range(args.repeat):  # settings alternate, so a load change on a shared machine hits all
        trials["plain"].append(plain_loop(cfg, task, args.warmup, args.steps, args.threads))
        print(f"[round {round_}] plain loop: {trials['plain'][-1]['steps_per_s']:.2f} steps/s", flush=True)
        for spec in args.configs:
            workers, zero = (int(x) for x in spec.split(":"))
            r = ray_trainer(job(workers, zero), task, args.warmup, args.steps)
            trials.setdefault(f"ray_deepspeed_{workers}w_zero{zero}", []).append(r)
            print(f"[round {round_}] ray+deepspeed {workers} worker(s) ZeRO-{zero}: {r['steps_per_s']:.2f} steps/s",
                  flush=True)
    ray.shutdown()
    best = {k: max(v, key=lambda r: r["steps_per_s"]) for k, v in trials.items()}
    plain = best.pop("plain")
    runs = best
    first = next(iter(runs.values()))
    report = {
        "benchmark": "trainer", "paradigm": args.paradigm, "preset": args.preset, "parameters": n_params,
        "frames": args.frames, "batch_size": args.batch_size, "warmup_steps": args.warmup,
        "measured_steps": args.steps, "threads_per_worker": args.threads, "rounds": args.repeat,
        "plain": plain, **runs,
        "ratio": first["steps_per_s"] / plain["steps_per_s"],
        "ratios": {k: v["steps_per_s"] / plain["steps_per_s"] for k, v in runs.items()},
        "median_ratios": {k: float(np.median([r["steps_per_s"] for r in v])) /
                          float(np.median([r["steps_per_s"] for r in trials["plain"]]))
                          for k, v in trials.items() if k != "plain"},
        "trials": trials,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    if args.home is None:  # the trainer's runs, checkpoints and MLflow store were only a means
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("ratio", "ratios", "median_ratios")}, indent=1))
    return report


if __name__ == "__main__":
    main()
