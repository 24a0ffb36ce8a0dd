"""A plain single-process PyTorch training loop over a :class:`~arfm.train.task.Task`.

What the distributed trainer does for one worker, without Ray Train, DeepSpeed, checkpoints or MLflow:
the task's model, AdamW (decay on matrices only, like the trainer), the trainer's learning-rate schedule,
gradient clipping, ``train.steps`` or ``train.time_budget_s`` (whichever ends first). Used for codec
development and tests, and as the single-process baseline of the trainer benchmark.

Data: a task that offers ``local_batches(cfg)`` (an iterator of collated batches) is read without Ray;
otherwise (or with ``use_ray=True``) the task's Ray Dataset is iterated on a local Ray (``num_cpus=2``).
A task that offers ``job_config(cfg)`` (the codec task) maps its own fields onto ``cfg.train`` first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from arfm.config import JobConfig
from arfm.train.task import Task, get_task


def _ray_batches(task: Task, cfg: JobConfig, batch_size: int) -> Iterator[dict[str, Any]]:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ds = task.train_dataset(cfg)
    epoch = 0
    while True:
        n = 0
        for np_batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True,
                                        local_shuffle_buffer_size=max(4 * batch_size, 64),
                                        local_shuffle_seed=cfg.train.seed + 7919 * epoch):
            n += 1
            yield task.collate(cfg, np_batch)
        if n == 0:
            raise RuntimeError(f"the training dataset gave no batch of {batch_size} rows")
        epoch += 1


def train_local(cfg: JobConfig, task_name: str | Task, steps: int | None = None,
                log: Callable[[str], Any] | None = print, *, use_ray: bool = False, device: str | None = None,
                history: list[dict[str, float]] | None = None):
    """Train ``task_name`` in this process and return the model (in eval mode, on ``device``).

    ``steps`` overrides ``train.steps``; ``history`` (a list) receives one dict of averaged metrics per
    ``train.log_every`` steps, with ``step`` and ``elapsed_s``; the last entry also has ``stopped``
    ("completed" | "time_budget").
    """
    import torch

    from arfm.train.engine import lr_lambda

    task = get_task(task_name) if isinstance(task_name, str) else task_name
    if hasattr(task, "job_config"):
        cfg = task.job_config(cfg)
    if steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": int(steps)})})
    t = cfg.train
    dev = torch.device(device or ("cuda" if t.use_gpu and torch.cuda.is_available() else "cpu"))
    torch.manual_seed(t.seed)
    model = task.build_model(cfg).to(dev).train()
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    batch_size = t.batch_size // t.grad_accum
    if hasattr(task, "local_batches") and not use_ray:
        batches = task.local_batches(cfg, batch_size=batch_size)
    else:
        batches = _ray_batches(task, cfg, batch_size)

    start = time.time()
    deadline = start + t.time_budget_s if t.time_budget_s else math.inf
    sums: dict[str, float] = {}
    n_micro = 0
    window = time.perf_counter()
    step = 0
    stopped = "completed"
    rows = history if history is not None else []
    while step < t.steps:
        for _ in range(t.grad_accum):
            batch = {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v
                     for k, v in next(batches).items()}
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
        if step % t.log_every == 0 or step == t.steps or out_of_time:
            dt = max(time.perf_counter() - window, 1e-9)
            m = {k: v / n_micro for k, v in sums.items()}
            m.update(step=step, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                     steps_per_s=(n_micro / t.grad_accum) / dt, elapsed_s=time.time() - start)
            rows.append(m)
            if log:
                extra = " ".join(f"{k} {v:.4g}" for k, v in m.items()
                                 if k not in ("step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed_s"))
                log(f"[arfm local] step {step}/{t.steps} loss {m.get('loss', float('nan')):.4f} {extra} "
                    f"lr {m['lr']:.2e} {m['steps_per_s']:.2f} steps/s {m['elapsed_s']:.0f}s")
            sums, n_micro, window = {}, 0, time.perf_counter()
        if out_of_time:
            stopped = "time_budget"
            break
    if rows:
        rows[-1]["stopped"] = stopped
    if log:
        log(f"[arfm local] done at step {step} ({stopped}, {time.time() - start:.0f}s)")
    return model.eval()
