"""Training-engine pieces shared by the trainer, its workers and the plain loop: config checks, the DeepSpeed
config, the warmup + cosine schedule (section 4.4), weights-only checkpoint loading and RNG state."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any, Callable

from arfm.config import ConfigError, JobConfig

DS_TAG = "ds"
FAIL_MARKER = ".injected_failure"
ATTEMPTS_FILE = "attempts.jsonl"
INIT_REPORT = "init_from.json"  # fine-tuning: loaded, new and dropped parameters (arfm.finetune)


# ----------------------------------------------------------------------------------------------- config checks
def check_config(cfg: JobConfig) -> None:
    """Reject settings the trainer cannot run, naming the fields (raises :class:`ConfigError`)."""
    t, errs = cfg.train, []
    if not t.use_gpu and t.precision != "fp32":
        errs.append(f"train.precision={t.precision} with train.use_gpu=false: DeepSpeed on CPU trains in fp32 "
                    "only; set train.precision=fp32 or train.use_gpu=true")
    if t.batch_size % (t.workers * t.grad_accum):
        errs.append(f"train.batch_size ({t.batch_size}) must be divisible by train.workers x train.grad_accum "
                    f"({t.workers} x {t.grad_accum})")
    if errs:
        raise ConfigError("invalid training setup:\n  " + "\n  ".join(errs))


def micro_batch_size(cfg: JobConfig) -> int:
    return cfg.train.batch_size // (cfg.train.workers * cfg.train.grad_accum)


def deepspeed_config(cfg: JobConfig) -> dict[str, Any]:
    t = cfg.train
    conf: dict[str, Any] = {
        "train_batch_size": t.batch_size,
        "train_micro_batch_size_per_gpu": micro_batch_size(cfg),
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "zero_allow_untested_optimizer": True,  # torch.optim.AdamW (CPU and GPU alike)
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    if t.precision == "bf16":
        conf["bf16"] = {"enabled": True}
    elif t.precision == "fp16":
        conf["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return conf


def lr_lambda(cfg: JobConfig, budget_used: Callable[[], float] | None = None):
    """Linear warmup over ``train.warmup_steps`` then cosine decay to 0 at ``train.steps`` (or constant).

    ``budget_used`` (the fraction of ``train.time_budget_s`` spent, for a run the budget may end first): the
    decay follows whichever is further along, the steps or the time, so a run stopped by its budget still ends
    its schedule near 0 instead of being cut off at its peak learning rate.
    """
    warmup, total, schedule = cfg.train.warmup_steps, cfg.train.steps, cfg.train.schedule

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if budget_used is not None:
            progress = max(progress, budget_used())
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class BudgetClock:
    """The fraction of a time budget spent since :meth:`start` (0 before it; ``None`` budget: always 0)."""

    def __init__(self, budget_s: float | None):
        self.budget_s, self.t0 = budget_s, None

    def start(self) -> None:
        import time

        self.t0 = time.time()

    def __call__(self) -> float:
        import time

        if not self.budget_s or self.t0 is None:
            return 0.0
        return (time.time() - self.t0) / self.budget_s


# ------------------------------------------------------------------------------------- safe checkpoint loading
def _ds_safe_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` that also admits DeepSpeed's plain optimizer-state types."""
    import torch

    extra = _ds_safe_globals() if "deepspeed" in sys.modules else []
    with torch.serialization.safe_globals(extra):
        return torch.load(path, map_location=map_location, weights_only=True)


@contextlib.contextmanager
def _weights_only_loads(counter: list[int]):
    """Make every ``torch.load`` inside (DeepSpeed's loaders included) a weights-only load."""
    import torch

    original = torch.load

    def load(f, map_location=None, *args, **kwargs):
        counter[0] += 1
        with torch.serialization.safe_globals(_ds_safe_globals()):
            kwargs["weights_only"] = True
            return original(f, map_location, *args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


# -------------------------------------------------------------------------------------------- RNG round trip
def rng_state() -> dict[str, Any]:
    """All RNG states as tensors/ints/tuples so they load under ``weights_only=True``."""
    import random

    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- worker


# ----------------------------------------------------------------------------------------------- the model
def initial_model(task: Any, cfg: JobConfig, log: Callable[[str], Any] | None = None,
                  report_dir: str | os.PathLike | None = None, tracking_uri: str | None = None):
    """The task's fresh model, then, with ``train.init_from``, the source's matching weights (fine-tuning).

    The report of loaded, new and dropped parameters is logged through ``log`` and written to
    ``report_dir/init_from.json``. The caller builds the optimizer afterwards, so it always starts fresh.
    """
    model = task.build_model(cfg)
    source = cfg.train.init_from
    if source:
        if getattr(task, "name", None) not in ("ar", "fm"):
            raise ConfigError(f"train.init_from applies to ar and fm training, not to the {task.name!r} task")
        from arfm.finetune import init_from, summary, write_report

        report = init_from(model, source, tracking_uri)
        if log is not None:
            log(summary(report))
        if report_dir is not None:
            write_report(report, report_dir)
    return model

