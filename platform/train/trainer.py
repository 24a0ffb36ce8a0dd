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

import datetime
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

from arfm import tracking
from arfm.config import JobConfig
from arfm.train.engine import (ATTEMPTS_FILE, DS_TAG, FAIL_MARKER, INIT_REPORT, check_config,  # noqa: F401
                               deepspeed_config, lr_lambda, micro_batch_size, rng_state, safe_load, set_rng_state)
from arfm.raylogs import quiet_ray_data
from arfm.train import data as train_data
from arfm.train import progress
from arfm.train.task import Task, get_task
from arfm.train.worker import _train_loop_per_worker


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
    # Worker output goes to Ray's log files: the driver prints one progress line per job instead.
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:  # light local start: enough logical CPUs for the workers plus Ray Data, no dashboard
        need = cfg.train.workers * cfg.train.cpus_per_worker + 1
        ray.init(num_cpus=max(2, need, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)


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
    progress_line: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Train ``task`` ("codec" | "vae" | "ar" | "fm", or a Task object) as one Ray Train run tracked by one MLflow run.

    ``resume``: False starts a new run (``run_name`` or ``<cfg.name>-<task>-<time>-<hex>``); an MLflow run id, or
    True together with ``run_name``, continues that run from its last checkpoint (same Ray storage folder, same
    MLflow run). Returns ``run_id``, ``run_name``, ``tracking_uri``, ``storage_path`` (the Ray run folder),
    ``checkpoint_dir`` (the last checkpoint), ``model_dir`` (the final artifact inside it), ``final_step``,
    ``metrics`` (rank 0's last report) and ``attempts`` (one row per worker-group start: ``start_step`` ...).
    ``progress_line`` receives the job's progress line (:mod:`arfm.train.progress`) as it changes.
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
        uri, run_id = tracking.start_run(cfg, "codec" if task_name in ("codec", "vae") else "train", paradigm, tags, run_name)
    run_dir = storage / run_name

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    _ensure_ray(cfg)
    quiet_ray_data()
    t = cfg.train
    env = {"DS_ACCELERATOR": "cpu"} if not t.use_gpu else {}
    env["OMP_NUM_THREADS"] = str(t.cpus_per_worker)
    started = time.time()
    try:
        data_plan = train_data.plan(cfg, task_obj)
        datasets, to_split = train_data.driver_datasets(cfg, task_obj, data_plan)
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    tracking.set_tags(uri, run_id, {"data_mode": data_plan.describe(), "data_read_s": f"{time.time() - started:.1f}"})
    conf = {
        "cfg": cfg.model_dump(mode="json"), "task": task if isinstance(task, str) else task_obj,
        "use_gpu": t.use_gpu, "run_dir": str(run_dir), "run_id": run_id, "tracking_uri": uri,
        "time_budget_s": t.time_budget_s, "data_mode": data_plan.mode, "has_valid": "valid" in datasets,
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
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=to_split),
    )
    watcher = progress.Watcher(progress_line, interval=10.0) if progress_line else None
    try:
        if watcher is not None:
            watcher.add(cfg.study_cell or run_name, run_dir)
            with watcher:
                result = trainer.fit()
            watcher.remove(cfg.study_cell or run_name)
        else:
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
                 "final_step": str(metrics.get("step", "")), "weights_kept": _kept(metrics)}
    init_report = run_dir / INIT_REPORT
    if init_report.is_file():  # fine-tuning: which weights came from train.init_from, which were new or dropped
        tracking.log_file(uri, run_id, init_report)
    if model_dir is not None:
        tracking.log_model_dir(uri, run_id, model_dir, "model")
        if cfg.tracking.register_models:
            name = tracking.registered_name("vae" if task_name == "vae" else paradigm)
            done_tags["registered_model"] = f"{name}/{tracking.register_model(uri, run_id, name)}"
    tracking.set_tags(uri, run_id, done_tags)
    tracking.finish_run(uri, run_id, "FINISHED")
    return {
        "run_id": run_id, "run_name": run_name, "tracking_uri": uri, "storage_path": str(run_dir),
        "checkpoint_dir": str(ckpt_dir) if ckpt_dir else None, "model_dir": str(model_dir) if model_dir else None,
        "final_step": int(metrics.get("step", 0)), "metrics": metrics, "attempts": _attempts(run_dir),
        "wall_s": time.time() - started,
    }


def _kept(metrics: dict[str, Any]) -> str:
    """Which weights the model artifact holds, as the ``weights_kept`` tag says it."""
    step = metrics.get("kept_step", metrics.get("step"))
    if metrics.get("kept") == "best":
        return f"best validation loss {metrics.get('kept_valid_loss', float('nan')):.4f} at step {step}"
    return f"last step {step}"
