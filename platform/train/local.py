"""A plain single-process PyTorch training loop over a :class:`~arfm.train.task.Task`.

What the distributed trainer does for one worker, without Ray Train, DeepSpeed, checkpoints or MLflow:
the task's model, AdamW (decay on matrices only, like the trainer), the trainer's learning-rate schedule,
gradient clipping, ``train.steps`` or ``train.time_budget_s`` (whichever ends first), and the validation loss
every ``train.valid_every`` steps. Used for codec development and tests, ``arfm train --local``, and as a
baseline of the trainer benchmark.

Data: the same epochs as the trainer (:mod:`arfm.train.data`). In memory mode a task that offers
``read_rows(cfg, split)`` is read without Ray (each file once); otherwise (or with ``use_ray=True``) its Ray
Dataset is read once on a local Ray (``num_cpus=2``). Stream mode iterates the Ray Dataset epoch after epoch
with a prefetching thread. A task that offers ``job_config(cfg)`` (the codec task) maps its own fields onto
``cfg.train`` first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from arfm.config import JobConfig
from arfm.train import data as train_data
from arfm.train.task import Task, get_task

VALID_SEED = 20_000_003


def _ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from arfm.raylogs import quiet_ray_data

    quiet_ray_data()


def _rows(task: Task, cfg: JobConfig, split: str, use_ray: bool) -> dict[str, Any] | None:
    """A split's rows as numpy columns, read once (without Ray when the task can)."""
    if hasattr(task, "read_rows") and not use_ray:
        return task.read_rows(cfg, split)
    _ray()
    if split == "train":
        ds = task.train_dataset(cfg, "memory") if train_data._takes_mode(task.train_dataset) else \
            task.train_dataset(cfg)
    else:
        ds = task.valid_dataset(cfg) if hasattr(task, "valid_dataset") else None
        if ds is None:
            return None
    return train_data.read_rows(train_data.iter_np(ds))


def data_feed(task: Task, cfg: JobConfig, batch_size: int, use_ray: bool = False) -> train_data.Feed:
    """The training feed of the plain loop (see the module docstring)."""
    data_plan = train_data.plan(cfg, task)
    if data_plan.mode == train_data.MEMORY:
        rows = _rows(task, cfg, "train", use_ray)
        return train_data.MemoryFeed(train_data.memory_epochs(task, cfg, rows, batch_size, 0))
    _ray()
    return train_data.StreamFeed(task.train_dataset(cfg), task, cfg, batch_size, 0,
                                 prefetch=cfg.train.prefetch_batches)


def _validation(task: Task, cfg: JobConfig, batch_size: int, use_ray: bool):
    if not cfg.train.valid_every:
        return None
    try:
        rows = _rows(task, cfg, "valid", use_ray)
    except (ValueError, FileNotFoundError):
        return None
    if not rows:
        return None
    rows = train_data.take(rows, np.arange(min(train_data.n_rows(rows), cfg.train.valid_max_rows)))
    return train_data.Validation.from_rows(task, cfg, rows, batch_size)


def train_local(cfg: JobConfig, task_name: str | Task, steps: int | None = None,
                log: Callable[[str], Any] | None = print, *, use_ray: bool = False, device: str | None = None,
                history: list[dict[str, float]] | None = None):
    """Train ``task_name`` in this process and return the model (in eval mode, on ``device``).

    ``steps`` overrides ``train.steps``; ``history`` (a list) receives one dict of averaged metrics per
    ``train.log_every`` steps, with ``step``, ``elapsed_s``, ``data_wait_frac`` and the latest ``valid_loss``;
    the last entry also has ``stopped`` ("completed" | "time_budget").
    """
    import torch

    from arfm.train.engine import BudgetClock, initial_model, lr_lambda

    task = get_task(task_name) if isinstance(task_name, str) else task_name
    if hasattr(task, "job_config"):
        cfg = task.job_config(cfg)
    if steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": int(steps)})})
    t = cfg.train
    dev = torch.device(device or ("cuda" if t.use_gpu and torch.cuda.is_available() else "cpu"))
    torch.manual_seed(t.seed)
    model = initial_model(task, cfg, log, tracking_uri=cfg.tracking.uri).to(dev).train()
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas))
    clock = BudgetClock(t.time_budget_s)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, clock))
    batch_size = t.batch_size // t.grad_accum
    batches = data_feed(task, cfg, batch_size, use_ray)
    valid = _validation(task, cfg, batch_size, use_ray)

    def to_dev(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}

    start = time.time()
    deadline = start + t.time_budget_s if t.time_budget_s else math.inf
    clock.start()
    sums: dict[str, float] = {}
    n_micro = 0
    window, data_s = time.perf_counter(), 0.0
    step = 0
    valid_loss = None
    stopped = "completed"
    rows = history if history is not None else []
    while step < t.steps:
        for _ in range(t.grad_accum):
            t_data = time.perf_counter()
            batch = to_dev(next(batches))
            data_s += time.perf_counter() - t_data
            out = model(batch)
            (out["loss"] / t.grad_accum).backward()
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_micro += 1
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0
                                                         else float("inf")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        out_of_time = time.time() >= deadline
        last = out_of_time or step == t.steps
        if valid is not None and (step % t.valid_every == 0 or last):
            t_valid = time.perf_counter()
            total, n = train_data.validation_loss(model, valid.batches, to_dev, VALID_SEED)
            valid_loss = total / max(n, 1)
            window += time.perf_counter() - t_valid  # throughput counts training time only
        if step % t.log_every == 0 or last:
            dt = max(time.perf_counter() - window, 1e-9)
            m = {k: v / n_micro for k, v in sums.items()}
            m.update(step=step, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                     steps_per_s=(n_micro / t.grad_accum) / dt, data_wait_frac=data_s / dt,
                     elapsed_s=time.time() - start)
            if valid_loss is not None:
                m["valid_loss"] = valid_loss
            rows.append(m)
            if log:
                extra = " ".join(f"{k} {v:.4g}" for k, v in m.items() if k not in (
                    "step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed_s", "data_wait_frac"))
                log(f"[arfm local] step {step}/{t.steps} loss {m.get('loss', float('nan')):.4f} {extra} "
                    f"lr {m['lr']:.2e} {m['steps_per_s']:.2f} steps/s wait {m['data_wait_frac']:.3f} "
                    f"{m['elapsed_s']:.0f}s")
            sums, n_micro, window, data_s = {}, 0, time.perf_counter(), 0.0
        if out_of_time:
            stopped = "time_budget"
            break
    if rows:
        rows[-1]["stopped"] = stopped
    if log:
        log(f"[arfm local] done at step {step} ({stopped}, {time.time() - start:.0f}s)")
    return model.eval()
