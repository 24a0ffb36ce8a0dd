"""The one trainer: Ray Train ``TorchTrainer`` workers drive a DeepSpeed engine; MLflow tracks the run.

``run_training(cfg, "ar")`` (or a :class:`~arfm.train.task.Task` object) runs ``cfg.train.workers`` workers
(``ScalingConfig`` from ``train.workers/use_gpu/cpus_per_worker``; gloo on CPU, NCCL on GPU). Each worker builds
the task's model, wraps it with ``deepspeed.initialize`` (ZeRO stage and bf16/fp16/fp32 from ``cfg.train``;
``DS_ACCELERATOR=cpu`` on CPU), AdamW with linear warmup then cosine decay (section 4.4), gradient clipping and
accumulation, optional EMA weights (the final artifact then holds them), and reads its own split of the task's
Ray Dataset. Rank 0 prints progress and logs to MLflow every ``train.log_every`` steps: ``loss`` and the model's
other scalar outputs (averaged over ranks), ``lr``, ``grad_norm``, ``steps_per_s``, ``samples_per_s``,
``tokens_per_s`` (codec tokens K x T, the same count for AR and FM), ``data_wait_frac``, ``epoch``; and
``attempt_start_step`` at every (re)start. ``train.time_budget_s`` counts from the call (Ray start included);
when it is spent the workers stop together, checkpoint and finalize.

Checkpoints (every ``train.checkpoint_every`` steps, and at the end) go through ``ray.train.report`` into
``<home>/ray_results/<run name>/checkpoint_<step>/``; each holds DeepSpeed's own layout (``ds/`` with the
module, the optimizer partition of every rank and the LR scheduler; ``latest``), ``rng_rank<r>.pt`` (Python,
NumPy, torch and CUDA RNG states per rank), ``ema.pt`` when EMA is on, and ``train_state.json`` (step, epoch,
micro-batches consumed in that epoch). The final one also holds ``model/`` (the task's artifact). A failed worker
makes Ray Train restart the group (``FailureConfig(max_failures)``) from the latest checkpoint; ``resume=`` reruns
the same Ray run name, whose checkpoint snapshot Ray Train restores, into the same MLflow run.

Safe loading: DeepSpeed's loader calls ``torch.load(weights_only=False)``. During ``load_checkpoint`` we force
``weights_only=True`` and allow-list only four plain DeepSpeed data types that its optimizer state holds
(``LossScaler``/``DynamicLossScaler`` (numbers), the ``ZeroStageEnum`` int enum and the ``fragment_address``
named tuple); anything else in a checkpoint (e.g. a callable) is refused by the unpickler.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from arfm import tracking
from arfm.config import ConfigError, JobConfig
from arfm.train.task import Task, get_task

DS_TAG = "ds"
FAIL_MARKER = ".injected_failure"
ATTEMPTS_FILE = "attempts.jsonl"


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


def lr_lambda(cfg: JobConfig):
    """Linear warmup over ``train.warmup_steps`` then cosine decay to 0 at ``train.steps`` (or constant)."""
    warmup, total, schedule = cfg.train.warmup_steps, cfg.train.steps, cfg.train.schedule

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


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
def _say(message: str) -> None:
    """One progress line on the worker's stdout (Ray forwards it to the driver)."""
    sys.stdout.write(f"[arfm train] {message}\n")
    sys.stdout.flush()


def _prefetch_first(gen):
    """``gen`` with its first item fetched in a background thread now: Ray Data takes seconds to start
    streaming, which then overlaps with building the model and DeepSpeed's init."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="arfm-prefetch")
    first = pool.submit(next, gen)
    pool.shutdown(wait=False)

    def items():
        yield first.result()
        yield from gen

    return items()


def _append_jsonl(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


class _Worker:
    """Everything one Ray Train worker does. Collective calls happen on every rank in the same order."""

    def __init__(self, conf: dict[str, Any]):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        with checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None) as d:
            self._setup(conf, Path(d) if d else None)

    def _setup(self, conf: dict[str, Any], ckpt: Path | None) -> None:
        import ray.train

        self.cfg = JobConfig.model_validate(conf["cfg"])
        self.task: Task = conf["task"] if not isinstance(conf["task"], str) else get_task(conf["task"])
        self.conf, self.run_dir = conf, Path(conf["run_dir"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        t = self.cfg.train
        state = json.loads((ckpt / "train_state.json").read_text()) if ckpt else {}
        self.step, self.epoch, self.epoch_pos = (state.get(k, 0) for k in ("step", "epoch", "epoch_pos"))
        self.resumed_at = {"start_step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos}
        self.batches = _prefetch_first(self._batches(ray.train.get_dataset_shard("train")))  # overlaps init

        if not conf["use_gpu"]:
            os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported in this process
        import deepspeed
        import torch

        self.torch = torch
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        model = self.task.build_model(self.cfg)
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(self.cfg),
            dist_init_required=False)
        self.device = self.engine.device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.ema: dict[str, Any] | None = None  # fp32 shadow on rank 0, {} on the other ranks
        self.safe_loads = [0]
        ema_sd = self._restore(ckpt, state) if ckpt else None
        torch.manual_seed(t.seed + 1000 * self.rank + self.step)  # dropout/noise streams differ per rank
        if t.ema_decay:
            if ema_sd is None:  # same branch on every rank: _full_params may be collective
                ema_sd = {n: v.detach().float().clone() for n, v in self._full_params()}
            self.ema = {k: v.to(self.device) for k, v in ema_sd.items()}
        self.logger = None
        if self.rank == 0 and conf.get("run_id"):
            self.logger = tracking.MetricLogger(conf["tracking_uri"], conf["run_id"])

    # -- state ------------------------------------------------------------------------------------------
    def _full_params(self):
        """(name, full fp32 parameter) on rank 0; collective under ZeRO partitioning / mixed precision."""
        from deepspeed.utils import safe_get_full_fp32_param

        simple = self.cfg.train.zero_stage == 0 and self.dtype is None
        for name, p in self.engine.module.named_parameters():
            full = p.detach() if simple else safe_get_full_fp32_param(p)
            if full is None:
                full = p.detach().float()
            if self.rank == 0:
                yield name, full

    def _update_ema(self) -> None:
        d = self.cfg.train.ema_decay
        with self.torch.no_grad():
            for name, full in self._full_params():
                self.ema[name].lerp_(full.to(self.ema[name].dtype), 1.0 - d)

    def _restore(self, d: Path, state: dict[str, Any]) -> dict[str, Any] | None:
        """Load the checkpoint in ``d`` (weights-only); return its EMA state ({} off rank 0) or None."""
        with _weights_only_loads(self.safe_loads):
            path, _ = self.engine.load_checkpoint(str(d), tag=DS_TAG)
        if path is None:
            raise RuntimeError(f"checkpoint {d} holds no DeepSpeed state under {DS_TAG}/")
        rng = d / f"rng_rank{self.rank}.pt"
        if rng.exists() and state.get("world_size") == self.world:
            set_rng_state(safe_load(rng))
        if (d / "ema.pt").exists() and self.cfg.train.ema_decay:
            return safe_load(d / "ema.pt") if self.rank == 0 else {}
        return None

    def _save(self, metrics: dict[str, Any], final: bool = False) -> dict[str, Any]:
        import tempfile

        import ray.train

        with tempfile.TemporaryDirectory(prefix="arfm-ckpt-") as tmp:
            tmp = Path(tmp)
            state = {"step": self.step, "epoch": self.epoch, "epoch_pos": self.epoch_pos,
                     "world_size": self.world}
            self.engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"arfm": state})
            self.torch.save(rng_state(), tmp / f"rng_rank{self.rank}.pt")
            if self.rank == 0:
                (tmp / "train_state.json").write_text(json.dumps(state))
                if self.ema:
                    self.torch.save({k: v.cpu() for k, v in self.ema.items()}, tmp / "ema.pt")
            if final:
                metrics = {**metrics, **self._finalize(tmp / "model")}
            name = f"checkpoint_{self.step:08d}"  # taken already when a finished run is resumed without more steps:
            taken = len(list(self.run_dir.glob(name + "*"))) if self.rank == 0 else 0  # rank 0 decides for all
            taken = int(self._allreduce([float(taken)], op="max")[0])
            name += f"-{taken}" if taken else ""
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                             checkpoint_dir_name=name)
        return metrics

    def _finalize(self, out_dir: Path) -> dict[str, Any]:
        """The task's final artifact (EMA weights when EMA is on), written by rank 0 into the last checkpoint."""
        simple = self.cfg.train.zero_stage == 0 and self.dtype is None and self.ema is None
        full = None if simple else dict(self._full_params())  # collective where partitioned
        if self.rank != 0:
            return {}
        model = self.engine.module
        if not simple:
            model = self.task.build_model(self.cfg)
            sd = model.state_dict()
            canonical = {id(p): n for n, p in self.engine.module.named_parameters()}
            for name, p in self.engine.module.named_parameters(remove_duplicate=False):  # tied names too
                src = (self.ema if self.ema is not None else full)[canonical[id(p)]]
                sd[name] = src.detach().to("cpu", sd[name].dtype)
            for name, b in self.engine.module.named_buffers():
                if name in sd:
                    sd[name] = b.detach().to("cpu", sd[name].dtype)
            model.load_state_dict(sd)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.eval()
        summary = self.task.finalize(self.cfg, model, out_dir) or {}
        return {f"final/{k}": float(v) for k, v in summary.items()}

    # -- data ---------------------------------------------------------------------------------------------
    def _batches(self, shard):
        """Micro-batches forever, epoch after epoch; skips what the restored checkpoint already consumed."""
        micro = micro_batch_size(self.cfg)
        while True:
            it = shard.iter_batches(batch_size=micro, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=max(4 * micro, 64),
                                    local_shuffle_seed=self.cfg.train.seed + 7919 * self.epoch + self.rank)
            n = 0
            for np_batch in it:
                n += 1
                if n <= self.epoch_pos:  # fast-forward to the saved data position
                    continue
                self.epoch_pos = n
                yield np_batch
            if n == 0:
                raise RuntimeError(f"worker {self.rank}: the training dataset gave no batch of {micro} rows; "
                                   "use a smaller train.batch_size or more data")
            self.epoch, self.epoch_pos = self.epoch + 1, 0

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in batch.items():
            if isinstance(v, self.torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if self.dtype is not None and v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        return out

    def _allreduce(self, values: list[float], op: str = "sum") -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = self.torch.tensor(values, dtype=self.torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    # -- loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        t, cfg = self.cfg.train, self.cfg
        start_step = self.step
        engine_name, opt_name = type(self.engine).__name__, type(self.engine.optimizer).__name__
        if self.rank == 0:
            _append_jsonl(self.run_dir / ATTEMPTS_FILE, {
                **self.resumed_at, "world_size": self.world, "engine": engine_name,
                "optimizer": opt_name, "safe_loads": self.safe_loads[0], "time": time.time()})
            _say(f"rank 0/{self.world}: {engine_name} ({opt_name}, ZeRO-{t.zero_stage}, {t.precision},"
                  f" {self.device}) starting at step {start_step}/{t.steps}")
            if self.logger:
                self.logger.log({"attempt_start_step": start_step}, step=start_step)
                tracking.set_tags(self.conf["tracking_uri"], self.conf["run_id"],
                                  {"engine": engine_name, "zero_optimizer": opt_name})
        # The budget counts training time: worker start-up, DeepSpeed's one-off build and restores are not in it.
        budget = self.conf.get("time_budget_s")
        deadline = time.time() + budget if budget else None
        count_tokens = getattr(self.task, "count_tokens", None)
        sums: dict[str, float] = {}
        n_micro = samples = tokens = 0
        grad_norm = float("nan")
        window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
        stopped = "completed"
        batches = self.batches
        last_metrics: dict[str, Any] = {"step": self.step, "engine": engine_name}
        while self.step < t.steps:
            t_data = time.perf_counter()
            batch = self.task.collate(cfg, next(batches))
            data_s += time.perf_counter() - t_data
            out = self.engine(self._to_device(batch))
            loss = out["loss"]
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.backward(loss)
            if boundary and t.zero_stage == 0 and self.dtype is None:  # DeepSpeed keeps no norm here
                grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
                grad_norm = self.torch.nn.utils.get_total_norm(grads) if grads else 0.0
            self.engine.step()
            for k, v in out.items():  # summed on the device; read back only when logging (no per-step sync)
                if isinstance(v, self.torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_micro += 1
            samples += next((v.shape[0] for v in batch.values() if isinstance(v, self.torch.Tensor)), 0)
            # codec tokens (K x T per example; the same count for AR and FM) unless the task counts its own
            toks = batch.get("tokens")
            tokens += int(count_tokens(batch)) if count_tokens else toks.numel() if toks is not None else 0
            if not boundary:
                continue
            self.step += 1
            window_steps += 1
            if t.zero_stage > 0 or self.dtype is not None:
                gn = self.engine.get_global_grad_norm()
                grad_norm = gn if gn is not None else float("nan")
            if self.ema is not None:
                self._update_ema()
            if t.fail_at_step == self.step and self.rank == 0:
                marker = self.run_dir / FAIL_MARKER
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(str(self.step))
                    raise RuntimeError(f"injected failure at step {self.step} (train.fail_at_step)")
            stop = deadline is not None and self._allreduce([float(time.time() >= deadline)], op="max")[0] > 0
            if self.step % t.log_every == 0 or self.step == t.steps or stop:
                keys = sorted(sums)
                red = self._allreduce([float(sums[k]) for k in keys] + [n_micro, samples, tokens])
                grad_norm = float(grad_norm)
                dt = max(time.perf_counter() - window_t, 1e-9)
                m = {k: red[i] / max(red[-3], 1) for i, k in enumerate(keys)}
                m.update(lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm, epoch=self.epoch,
                         steps_per_s=window_steps / dt, samples_per_s=red[-2] / dt,
                         data_wait_frac=data_s / dt)
                if red[-1]:
                    m["tokens_per_s"] = red[-1] / dt
                last_metrics = {**m, "step": self.step, "engine": engine_name}
                if self.rank == 0:
                    _say(f"step {self.step}/{t.steps} loss {m.get('loss', float('nan')):.4f} "
                          f"lr {m['lr']:.2e} grad_norm {grad_norm:.3f} {m['steps_per_s']:.2f} steps/s "
                          f"{m['samples_per_s']:.1f} samples/s")
                    if self.logger:
                        self.logger.log(m, step=self.step)
                sums, n_micro, samples, tokens = {}, 0, 0, 0
                window_t, window_steps, data_s = time.perf_counter(), 0, 0.0
            if stop:
                stopped = "time_budget"
                break
            if self.step % t.checkpoint_every == 0 and self.step < t.steps:
                self._save(last_metrics)
        last_metrics.update(step=self.step, stopped=stopped, start_step=start_step)
        final = self._save(last_metrics, final=True)
        if self.rank == 0:
            _say(f"done at step {self.step} ({stopped})")
            if self.logger:
                self.logger.log({k: v for k, v in final.items() if k.startswith("final/")}, step=self.step)


def _train_loop_per_worker(conf: dict[str, Any]) -> None:
    _Worker(conf).run()


# ---------------------------------------------------------------------------------------------------- driver
def _resolve_task(task: str | Task) -> Task:
    if isinstance(task, str):
        return get_task(task)
    module = sys.modules.get(type(task).__module__)
    if module is not None and not module.__name__.startswith("arfm."):
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(module)  # e.g. a test's task, not importable on workers
    return task


def _ensure_ray(cfg: JobConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:  # light local start: enough logical CPUs for the workers plus Ray Data, no dashboard
        need = cfg.train.workers * cfg.train.cpus_per_worker + 1
        ray.init(num_cpus=max(2, need, os.cpu_count() or 1), include_dashboard=False)


def _new_run_name(cfg: JobConfig, task_name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-{task_name}-{stamp}-{secrets.token_hex(2)}"


def _attempts(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / ATTEMPTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_training(
    cfg: JobConfig,
    task: str | Task,
    resume: bool | str = False,
    run_name: str | None = None,
    extra_tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``task`` ("codec" | "ar" | "fm", or a Task object) as one Ray Train run tracked by one MLflow run.

    ``resume``: False starts a new run (``run_name`` or ``<cfg.name>-<task>-<time>-<hex>``); an MLflow run id, or
    True together with ``run_name``, continues that run from its last checkpoint (same Ray storage folder, same
    MLflow run). Returns ``run_id``, ``run_name``, ``tracking_uri``, ``storage_path`` (the Ray run folder),
    ``checkpoint_dir`` (the last checkpoint), ``model_dir`` (the final artifact inside it), ``final_step``,
    ``metrics`` (rank 0's last report) and ``attempts`` (one row per worker-group start: ``start_step`` ...).
    """
    check_config(cfg)  # before anything starts
    task_obj = _resolve_task(task)
    if hasattr(task_obj, "job_config"):  # e.g. the codec task maps codec.steps/lr/... onto train (idempotent)
        cfg = task_obj.job_config(cfg)
    check_config(cfg)
    task_name = task_obj.name
    storage = tracking.home() / "ray_results"
    uri = tracking.tracking_uri(cfg)
    task_tags = dict(task_obj.tags(cfg) or {})
    paradigm = str(task_tags.pop("paradigm", task_name))

    if resume:
        run_id = resume if isinstance(resume, str) else None
        if run_id is None:
            if not run_name:
                raise ValueError("resume=True needs run_name (the Ray run folder) or pass the MLflow run id")
            run_id = tracking.find_run(uri, cfg.tracking.experiment, "ray_run_name", run_name)
        if run_id is None:
            raise ValueError(f"no MLflow run in experiment {cfg.tracking.experiment!r} has ray_run_name={run_name!r}")
        run = tracking.client(uri).get_run(run_id)
        run_name = run_name or run.data.tags.get("ray_run_name")
        if not run_name or not (storage / run_name).exists():
            raise ValueError(f"run {run_id}: nothing to resume (no Ray run folder {storage / str(run_name)})")
        tracking.resume_run(cfg, run_id, tags={"resumed": "true"})
    else:
        run_name = run_name or _new_run_name(cfg, task_name)
        if (storage / run_name).exists():
            raise ValueError(f"Ray run folder {storage / run_name} already exists: resume it (resume=True / "
                             "--resume RUN_ID) or choose another run name")
        tags = {**task_tags, **(extra_tags or {}), "task": task_name, "ray_run_name": run_name,
                "ray_storage_path": str(storage / run_name)}
        uri, run_id = tracking.start_run(cfg, "codec" if task_name == "codec" else "train", paradigm, tags, run_name)
    run_dir = storage / run_name

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    _ensure_ray(cfg)
    t = cfg.train
    env = {"DS_ACCELERATOR": "cpu"} if not t.use_gpu else {}
    env["OMP_NUM_THREADS"] = str(t.cpus_per_worker)
    started = time.time()
    conf = {
        "cfg": cfg.model_dump(mode="json"), "task": task if isinstance(task, str) else task_obj,
        "use_gpu": t.use_gpu, "run_dir": str(run_dir), "run_id": run_id, "tracking_uri": uri,
        "time_budget_s": t.time_budget_s,
    }
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=conf,
        scaling_config=ray.train.ScalingConfig(num_workers=t.workers, use_gpu=t.use_gpu,
                                               resources_per_worker={"CPU": t.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": env}),
        datasets={"train": task_obj.train_dataset(cfg)},
    )
    try:
        result = trainer.fit()
        if result.error is not None:
            raise result.error
    except BaseException as exc:
        tracking.finish_run(uri, run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    metrics = dict(result.metrics or {})
    ckpt_dir = Path(result.checkpoint.path) if result.checkpoint is not None else None
    model_dir = ckpt_dir / "model" if ckpt_dir is not None and (ckpt_dir / "model").is_dir() else None
    done_tags = {"checkpoint_dir": str(ckpt_dir), "stopped": str(metrics.get("stopped", "completed")),
                 "final_step": str(metrics.get("step", ""))}
    if model_dir is not None:
        tracking.log_model_dir(uri, run_id, model_dir, "model")
        if cfg.tracking.register_models:
            name = tracking.registered_name(paradigm)
            done_tags["registered_model"] = f"{name}/{tracking.register_model(uri, run_id, name)}"
    tracking.set_tags(uri, run_id, done_tags)
    tracking.finish_run(uri, run_id, "FINISHED")
    return {
        "run_id": run_id, "run_name": run_name, "tracking_uri": uri, "storage_path": str(run_dir),
        "checkpoint_dir": str(ckpt_dir) if ckpt_dir else None, "model_dir": str(model_dir) if model_dir else None,
        "final_step": int(metrics.get("step", 0)), "metrics": metrics, "attempts": _attempts(run_dir),
        "wall_s": time.time() - started,
    }
