"""``arfm train``: one training job (codec, AR or FM) on Ray Train + DeepSpeed, tracked in MLflow."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job



def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: ConfigOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        task: Annotated[Optional[str], typer.Option(
            "--task", "-t", help="ar | fm | codec (default: model.paradigm)")] = None,
        resume: Annotated[Optional[str], typer.Option(
            "--resume", help="MLflow run id of a stopped run to continue from its last checkpoint")] = None,
        run_name: Annotated[Optional[str], typer.Option(
            "--run-name", help="Ray run folder name (default: <name>-<task>-<time>-<hex>)")] = None,
        tag: Annotated[Optional[list[str]], typer.Option(
            "--tag", help="extra MLflow tag key=value (repeatable)")] = None,
        local: Annotated[bool, typer.Option(
            "--local", help="single-process PyTorch loop (no Ray Train, DeepSpeed or MLflow); saves the model "
                            "folder to --out")] = False,
        out: Annotated[Optional[str], typer.Option(
            "--out", help="with --local: where the model folder goes (default <ARFM_HOME>/local/<name>-<task>)")] = None,
    ) -> None:
        """Train a model with the distributed trainer: Ray Train workers wrapping a DeepSpeed engine.

        Workers, GPUs, precision (fp32; bf16/fp16 on GPU) and the ZeRO stage come from the train section: the
        same command runs on one CPU worker here and on N GPU workers on a cluster. The run folder is
        <ARFM_HOME or ./runs>/ray_results/<run name> (checkpoints every train.checkpoint_every steps); MLflow
        (default sqlite:///runs/mlflow.db; MLFLOW_TRACKING_URI overrides) gets params, step metrics, tags and
        the final model (artifact "model", registered as arfm-<paradigm>).

        Examples:

          arfm train --preset tiny --task ar --set data.shards=runs/shards

          arfm train --preset tiny --task fm --set train.steps=50 --set train.time_budget_s=300

          arfm train -c job.yaml --set train.workers=4 --set train.use_gpu=true --set train.precision=bf16

          arfm train --preset tiny --task ar --set train.steps=400 --resume <MLflow run id>

          arfm train --preset tiny --task fm --local --set train.time_budget_s=60

          MLFLOW_TRACKING_URI=http://head:5000 arfm train --preset paper --task fm
        """
        overrides = list(set_ or [])
        if task is not None and task not in ("ar", "fm", "codec"):
            fail(f"--task {task!r}: choose ar, fm or codec")
        if task in ("ar", "fm"):
            overrides = [f"model.paradigm={task}", *overrides]
        cfg = load_job(config, preset, overrides)
        task_name = task or cfg.model.paradigm
        extra = {}
        for item in tag or []:
            if "=" not in item:
                fail(f"--tag {item!r}: expected key=value")
            k, v = item.split("=", 1)
            extra[k.strip()] = v
        from arfm.config import ConfigError

        if local:
            _train_local(cfg, task_name, out)
            return
        from arfm.train.trainer import run_training

        try:
            result = run_training(cfg, task_name, resume=resume or False, run_name=run_name, extra_tags=extra,
                                  progress_line=lambda line: typer.echo(f"[train] {line}"))
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        shown = {k: result[k] for k in ("run_id", "run_name", "final_step", "checkpoint_dir", "model_dir",
                                         "tracking_uri", "wall_s")}
        shown["stopped"] = result["metrics"].get("stopped")
        shown["attempt_start_steps"] = [a["start_step"] for a in result["attempts"]]
        typer.echo(json.dumps(shown, indent=1, default=str))


def _train_local(cfg, task_name: str, out: str | None) -> None:
    from pathlib import Path

    from arfm.config import ConfigError
    from arfm.study import home
    from arfm.train.local import train_local
    from arfm.train.task import get_task

    task = get_task(task_name)
    history: list[dict] = []
    try:
        model = train_local(cfg, task, log=lambda s: typer.echo(s, err=True), history=history)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if hasattr(task, "job_config"):
        cfg = task.job_config(cfg)
    target = Path(out) if out else home() / "local" / f"{cfg.name}-{task_name}"
    target.mkdir(parents=True, exist_ok=True)
    summary = task.finalize(cfg, model, target) or {}
    last = history[-1] if history else {}
    typer.echo(json.dumps({"model_dir": str(target), "final_step": last.get("step"), "stopped": last.get("stopped"),
                           "valid_loss": last.get("valid_loss"), **summary}, indent=1, default=str))
