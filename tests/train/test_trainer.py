"""The Ray Train + DeepSpeed trainer on CPU: DeepSpeed engaged, MLflow run complete, fault tolerance, resume."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from arfm import tracking
from arfm.config import ConfigError, resolve
from arfm.train import engine, trainer

FAST = ["train.batch_size=8", "train.warmup_steps=2", "train.lr=1e-2"]


def _cfg(*overrides):
    return resolve("tiny", overrides=[*FAST, *overrides])


# ------------------------------------------------------------------------------------------ no Ray needed
def test_bad_precision_and_batch_combos_are_rejected_with_the_field_named():
    with pytest.raises(ConfigError, match=r"train.precision.*use_gpu"):
        resolve("tiny", overrides=["train.precision=bf16"])
    # a config built around validation still meets the trainer's own check, before Ray starts
    cfg = resolve("tiny")
    bad = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "fp16", "zero_stage": 2})})
    with pytest.raises(ConfigError, match=r"train.precision=fp16 with train.use_gpu=false.*fp32"):
        trainer.run_training(bad, "ar")
    with pytest.raises(ConfigError, match=r"train.batch_size \(10\) must be divisible .*\(2 x 2\)"):
        trainer.check_config(_cfg("train.batch_size=10", "train.workers=2", "train.grad_accum=2"))


def test_deepspeed_config_and_schedule_follow_the_train_section():
    cfg = _cfg("train.batch_size=32", "train.workers=2", "train.grad_accum=2", "train.zero_stage=2",
               "train.grad_clip=0.5", "train.steps=100", "train.warmup_steps=10")
    ds = trainer.deepspeed_config(cfg)
    assert ds["train_batch_size"] == 32 and ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 2 and ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_clipping"] == 0.5 and "bf16" not in ds and "fp16" not in ds
    f = trainer.lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)  # linear warmup
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))  # cosine decay is monotone
    assert trainer.lr_lambda(_cfg("train.schedule=constant", "train.warmup_steps=0"))(50) == 1.0
    # a run its time budget ends first decays by time: half the budget spent -> the cosine's midpoint
    spent = [0.0]
    g = trainer.lr_lambda(cfg, lambda: spent[0])
    assert g(20) == pytest.approx(f(20))
    spent[0] = 0.5
    assert g(20) == pytest.approx(0.5) and g(80) == pytest.approx(f(80))  # whichever is further along
    spent[0] = 3.0
    assert g(20) == pytest.approx(0.0)


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save(trainer.rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    trainer.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/arfm-pwned-by-checkpoint",))


def test_checkpoint_loading_refuses_code(tmp_path):
    import deepspeed  # noqa: F401  (so the DeepSpeed allow-list is active)

    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        trainer.safe_load(path)
    counter = [0]
    with engine._weights_only_loads(counter), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)  # what DeepSpeed's loader asks for; forced to weights-only
    assert counter == [1] and not Path("/tmp/arfm-pwned-by-checkpoint").exists()


# -------------------------------------------------------------------------------------------------- Ray runs
# One run serves three tests (each Ray Train start costs ~15-40 s on 2 shared cores): ZeRO-2, EMA and 2 micro-batches
# of 4 per step on one CPU worker, checkpoints at steps 2 and 4, an injected failure at step 3 (worker 0 raises
# once), then a resume with a time budget.
BASE = ["train.log_every=1", "train.checkpoint_every=2", "train.fail_at_step=3", "train.zero_stage=2",
        "train.max_failures=1", "train.ema_decay=0.5", "train.grad_accum=2", "study_cell=test-cell"]


@pytest.fixture(scope="module")
def faulty_run(ray_local):
    from fake_task import FakeTask

    cfg = _cfg("train.steps=5", *BASE)
    return cfg, trainer.run_training(cfg, FakeTask(), extra_tags={"purpose": "test"})


def test_run_on_one_cpu_worker_engages_deepspeed_and_fills_mlflow(faulty_run, arfm_home):
    from mlflow.tracking import MlflowClient

    cfg, r = faulty_run
    assert r["final_step"] == 5 and r["metrics"]["engine"] == "DeepSpeedEngine"
    assert {a["engine"] for a in r["attempts"]} == {"DeepSpeedEngine"}
    assert {a["optimizer"] for a in r["attempts"]} == {"DeepSpeedZeroOptimizer"}  # ZeRO-2 really on
    assert r["tracking_uri"] == f"sqlite:///{arfm_home / 'mlflow.db'}"
    assert Path(r["storage_path"]) == arfm_home / "ray_results" / r["run_name"]
    ckpt = Path(r["checkpoint_dir"])
    assert ckpt.name == "checkpoint_00000005"
    assert {p.name for p in (ckpt / "ds").iterdir()} == {"mp_rank_00_model_states.pt",
                                                         "zero_pp_rank_0_mp_rank_00_optim_states.pt"}
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 5

    c = MlflowClient(r["tracking_uri"])
    run = c.get_run(r["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert set(tracking.REQUIRED_TAGS) <= set(tags)
    assert tags["paradigm"] == "fake" and tags["job"] == "train" and tags["study_cell"] == "test-cell"
    assert tags["frame_rate"] == "50" and tags["preset"] == "tiny" and tags["conditioning"] == "text"
    assert tags["engine"] == "DeepSpeedEngine" and tags["purpose"] == "test" and tags["git_commit"]
    assert tags["ray_run_name"] == r["run_name"] and tags["checkpoint_dir"] == r["checkpoint_dir"]
    params = run.data.params
    assert len(params) == len(cfg.flat()) and params["train.steps"] == "5" and params["model.controls"] == "[]"
    assert [m.step for m in c.get_metric_history(r["run_id"], "loss")] == [1, 2, 3, 4, 5]
    for key in ("lr", "grad_norm", "steps_per_s", "samples_per_s", "mae"):
        assert len(c.get_metric_history(r["run_id"], key)) == 5, key
    lrs = [m.value for m in sorted(c.get_metric_history(r["run_id"], "lr"), key=lambda m: m.step)]
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4] == 0.0  # cosine decay to zero at the last step
    assert all(math.isfinite(m.value) and m.value > 0 for m in c.get_metric_history(r["run_id"], "grad_norm"))
    assert {a.path for a in c.list_artifacts(r["run_id"], "model")} == {
        "model/config.yaml", "model/weights.pt", "model/meta.json"}
    assert r["run_id"] in {v.run_id for v in c.search_model_versions("name='arfm-fake'")}
    assert tracking.find_finished_run(cfg.tracking.experiment, "test-cell") == r["run_id"]

    # the final artifact holds the EMA weights (and loads weights-only), not the raw ones
    weights = torch.load(Path(r["model_dir"]) / "weights.pt", weights_only=True)
    ema = torch.load(ckpt / "ema.pt", weights_only=True)
    raw = trainer.safe_load(ckpt / "ds" / "mp_rank_00_model_states.pt")["module"]
    assert weights.keys() == ema.keys() == raw.keys()
    assert all(torch.equal(weights[k], ema[k]) for k in ema)
    assert not all(torch.equal(weights[k], raw[k]) for k in raw)


def test_injected_failure_restarts_from_the_last_checkpoint(faulty_run):
    from mlflow.tracking import MlflowClient

    _, r = faulty_run
    starts = [a["start_step"] for a in r["attempts"]]
    assert starts == [0, 2], starts  # restarted from checkpoint_00000002, not from zero
    second = r["attempts"][1]
    # data position restored: 2 steps x 2 micro-batches of 4 rows consumed (64 rows = 16 micro-batches an epoch)
    assert (second["epoch"], second["epoch_pos"]) == (0, 4)
    assert second["safe_loads"] >= 2  # model states + the ZeRO optimizer partition, all weights-only
    assert (Path(r["storage_path"]) / trainer.FAIL_MARKER).read_text() == "3"
    c = MlflowClient(r["tracking_uri"])
    assert [m.value for m in c.get_metric_history(r["run_id"], "attempt_start_step")] == [0, 2]


def test_resume_continues_the_same_run_and_honours_the_time_budget(faulty_run):
    from fake_task import FakeTask
    from mlflow.tracking import MlflowClient

    _, r = faulty_run
    # 1000 more steps but a training budget shorter than one step (start-up is not counted): one step, then a
    # clean stop
    cfg = _cfg("train.steps=1000", "train.time_budget_s=0.001", *BASE)
    r2 = trainer.run_training(cfg, FakeTask(), resume=r["run_id"])
    assert r2["run_id"] == r["run_id"] and r2["storage_path"] == r["storage_path"]
    assert [a["start_step"] for a in r2["attempts"]] == [0, 2, 5]  # continues at 5; no second injected failure
    assert r2["final_step"] == 6 and r2["metrics"]["start_step"] == 5
    assert r2["metrics"]["stopped"] == "time_budget"
    assert Path(r2["checkpoint_dir"]).name == "checkpoint_00000006"  # checkpointed and finalized on stop
    assert (Path(r2["model_dir"]) / "weights.pt").exists()
    c = MlflowClient(r["tracking_uri"])
    run = c.get_run(r["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    assert run.data.tags["stopped"] == "time_budget" and run.data.tags["final_step"] == "6"
    assert json.loads(run.data.tags["resumed_with_changes"]) == {"train.steps": "1000",
                                                                  "train.time_budget_s": "0.001"}
    assert [m.step for m in c.get_metric_history(r["run_id"], "loss")] == [1, 2, 3, 4, 5, 6]
    assert len([v for v in c.search_model_versions("name='arfm-fake'") if v.run_id == r["run_id"]]) == 2

    with pytest.raises(ValueError, match="already exists"):
        trainer.run_training(_cfg("train.steps=2"), FakeTask(), run_name=r["run_name"])
    with pytest.raises(ValueError, match="nothing to resume|no MLflow run"):
        trainer.run_training(_cfg("train.steps=2"), FakeTask(), resume=True, run_name="never-ran")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ARFM_SLOW_TESTS"), reason="~1 min on 2 cores; set ARFM_SLOW_TESTS=1")
def test_two_cpu_workers_zero2_over_gloo(ray_local):
    from fake_task import FakeTask

    r = trainer.run_training(_cfg("train.steps=4", "train.workers=2", "train.zero_stage=2",
                                  "train.checkpoint_every=2", "train.log_every=2"), FakeTask())
    (attempt,) = r["attempts"]
    assert attempt["world_size"] == 2 and attempt["optimizer"] == "DeepSpeedZeroOptimizer"
    assert r["final_step"] == 4 and r["metrics"]["samples_per_s"] > 0
    ds = {p.name for p in (Path(r["checkpoint_dir"]) / "ds").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= ds
    assert {f"rng_rank{i}.pt" for i in (0, 1)} <= {p.name for p in Path(r["checkpoint_dir"]).iterdir()}


# ---------------------------------------------------------------------------------- the data path in a real run
@pytest.fixture(scope="module")
def memory_run(ray_local, tmp_path_factory):
    """40 rows in 4 Parquet files held in memory: 10 batches of 4 an epoch, 14 steps (two epochs), a failure at
    step 6 restarted from the checkpoint of step 4, validation every 3 steps, the best weights kept."""
    from fake_task import FileFakeTask

    task = FileFakeTask(str(tmp_path_factory.mktemp("file_task")))
    cfg = _cfg("train.steps=14", "train.batch_size=4", "train.log_every=1", "train.checkpoint_every=4",
               "train.fail_at_step=6", "train.max_failures=1", "train.valid_every=3", "train.keep=best",
               "train.lr=3e-2", "study_cell=memory-cell")
    return cfg, task, trainer.run_training(cfg, task)


def test_memory_mode_reads_each_file_once_and_resumes_at_the_exact_batch(memory_run):
    import pyarrow.parquet as pq

    from arfm.train import data as td

    cfg, task, r = memory_run
    assert r["final_step"] == 14 and [a["start_step"] for a in r["attempts"]] == [0, 4]
    train_files = sorted(str(p) for p in Path(task.folder, "train").glob("*.parquet"))
    run_reads = Path(task.reads).read_text().split()
    # what reading the training files once costs: Ray Data opens a Parquet file a few times in one read (footer,
    # schema, the data), so measure one read of the same dataset
    Path(task.reads).unlink()
    task.train_dataset(cfg).materialize()
    one_read = Path(task.reads).read_text().split()
    assert {f: run_reads.count(f) for f in train_files} == {f: one_read.count(f) for f in train_files}, (
        "the run read the training files more than once (once per epoch or per restart?)")
    # the batches the model trained on: the uninterrupted sequence, with steps 5-6 repeated after the restart
    table = pq.read_table(f"{task.folder}/train").to_pydict()
    rows = td.read_rows([{k: np.asarray(v) for k, v in table.items()}])
    straight = td.MemoryFeed(td.memory_epochs(task, cfg, rows, 4, 0))
    expected = [next(straight)["idx"].tolist() for _ in range(14)]
    seen = [json.loads(line) for line in Path(task.batches).read_text().splitlines()]
    assert seen == expected[:6] + expected[4:], "the restarted worker did not continue at the saved batch"
    assert sorted(i for b in expected[:10] for i in b) == list(range(40))  # epoch 0 saw every row once
    assert expected[10:14] != expected[:4]  # epoch 1 is a new order


def test_validation_is_logged_and_the_best_weights_are_kept(memory_run):
    from mlflow.tracking import MlflowClient

    _, task, r = memory_run
    c = MlflowClient(r["tracking_uri"])
    hist = sorted(c.get_metric_history(r["run_id"], "valid_loss"), key=lambda m: m.step)
    assert [m.step for m in hist][-4:] == [6, 9, 12, 14]  # every 3 steps and at the end (3 and 6 twice: restart)
    best = min(hist, key=lambda m: m.value)
    tags = c.get_run(r["run_id"]).data.tags
    assert tags["weights_kept"] == f"best validation loss {best.value:.4f} at step {best.step}"
    assert tags["data_mode"].startswith("memory")
    assert r["metrics"]["kept_step"] == best.step
    weights = torch.load(Path(r["model_dir"]) / "weights.pt", weights_only=True)
    snapshot = trainer.safe_load(Path(r["checkpoint_dir"]) / "best.pt")
    assert all(torch.equal(weights[k], snapshot[k]) for k in snapshot)
    if best.step != 14:  # the artifact is not simply the last weights
        last = trainer.safe_load(Path(r["checkpoint_dir"]) / "ds" / "mp_rank_00_model_states.pt")["module"]
        assert not all(torch.equal(weights[k], last[k]) for k in last)
