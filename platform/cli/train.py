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
        from arfm.train.trainer import run_training

        try:
            result = run_training(cfg, task_name, resume=resume or False, run_name=run_name, extra_tags=extra)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        shown = {k: result[k] for k in ("run_id", "run_name", "final_step", "checkpoint_dir", "model_dir",
                                         "tracking_uri", "wall_s")}
        shown["stopped"] = result["metrics"].get("stopped")
        shown["attempt_start_steps"] = [a["start_step"] for a in result["attempts"]]
        typer.echo(json.dumps(shown, indent=1, default=str))
