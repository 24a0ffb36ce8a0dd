"""arfm.tracking against a throwaway SQLite store: URI precedence, tags, params, metrics, finished-run lookup."""

from __future__ import annotations

import json
import math

import pytest

from arfm import tracking
from arfm.config import resolve


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_tracking_uri_precedence(home, monkeypatch, tmp_path):
    cfg = resolve("tiny")
    assert tracking.tracking_uri(cfg) == f"sqlite:///{home / 'mlflow.db'}"
    assert tracking.artifact_root(tracking.tracking_uri(cfg)) == (home / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(cfg) == "http://127.0.0.1:5000"
    assert tracking.artifact_root("http://127.0.0.1:5000") is None  # the server decides
    monkeypatch.chdir(tmp_path)
    cfg = resolve("tiny", overrides=["tracking.uri=sqlite:///rel/x.db"])
    assert tracking.tracking_uri(cfg) == f"sqlite:///{tmp_path / 'rel' / 'x.db'}"  # absolute for every process


def test_params_respect_mlflow_limits():
    cfg = resolve("tiny", overrides=["name=" + "n" * 7000, "model.controls=[chords, melody]"])
    params = tracking.config_params(cfg)
    assert set(params) == set(cfg.flat())
    assert len(params["name"]) == tracking.MAX_PARAM_VALUE and params["name"].endswith("...")
    assert json.loads(params["model.controls"]) == ["chords", "melody"]
    assert params["train.ema_decay"] == "null" and params["train.steps"] == "200"


def test_run_lifecycle_and_finished_lookup(home, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = resolve("tiny", overrides=["study_cell=ar-50hz", "model.controls=[chords]"])
    uri, run_id = tracking.start_run(cfg, "train", "ar", {"extra": "1"}, run_name="r1")
    c = MlflowClient(uri)
    run = c.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "r1"
    assert run.info.artifact_uri.startswith((home / "mlartifacts").as_uri())
    tags = run.data.tags
    assert {k: tags[k] for k in tracking.REQUIRED_TAGS if k != "git_commit"} == {
        "paradigm": "ar", "job": "train", "frame_rate": "50", "study_cell": "ar-50hz",
        "conditioning": "controls", "latent": "encodec", "preset": "tiny"}
    assert tags["git_commit"] == "unknown" or len(tags["git_commit"]) == 40
    assert tags["extra"] == "1" and len(run.data.params) == len(cfg.flat())

    log = tracking.MetricLogger(uri, run_id)
    log.log({"loss": 1.5, "lr": 1e-3, "bad": float("nan"), "text": "x"}, step=3)
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "loss")] == [(3, 1.5)]
    assert "text" not in c.get_run(run_id).data.metrics and log.failures == 0
    # a NaN (a diverged loss) is recorded as NaN at its step: neither dropped nor turned into a number
    bad = c.get_metric_history(run_id, "bad")
    assert len(bad) == 1 and bad[0].step == 3 and math.isnan(bad[0].value)

    assert tracking.find_finished_run(cfg.tracking.experiment, "ar-50hz") is None  # still running
    tracking.finish_run(uri, run_id)
    assert tracking.find_finished_run(cfg.tracking.experiment, "ar-50hz") == run_id
    assert tracking.find_finished_run(cfg.tracking.experiment, "ar-50hz", job="evaluate") is None
    assert tracking.find_finished_run(cfg.tracking.experiment, "fm-50hz") is None
    assert tracking.find_finished_run("no-such-experiment", "ar-50hz") is None
    assert tracking.find_run(uri, cfg.tracking.experiment, "extra", "1") == run_id

    changed = resolve("tiny", overrides=["study_cell=ar-50hz", "model.controls=[chords]", "train.steps=300"])
    tracking.resume_run(changed, run_id, tags={"resumed": "true"})
    run = c.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.params["train.steps"] == "200"  # params are immutable
    assert json.loads(run.data.tags["resumed_with_changes"]) == {"train.steps": "300"}

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.pt").write_bytes(b"x")
    tracking.log_model_dir(uri, run_id, tmp_path / "model")
    assert tracking.register_model(uri, run_id, "arfm-ar") == "1"
    assert tracking.register_model(uri, run_id, "arfm-ar") == "2"  # the name exists already: a new version
    assert [a.path for a in c.list_artifacts(run_id, "model")] == ["model/weights.pt"]


def test_git_commit_outside_a_checkout_is_unknown(tmp_path):
    assert tracking.git_commit(tmp_path) == "unknown"
