"""The study pipeline (platform/pipeline.py) and the grid script (experiments/grid.py) as they behave: finished
cells are skipped, a failed cell does not stop the others and makes the exit flag false, unknown stages and
cells are errors; grid exit codes 0 / 1 / 2, --list and --only.

Ray is replaced by an in-process stand-in with the calls the pipeline makes (``remote``, ``wait``, ``get``,
``cluster_resources``): a task runs when submitted and its exception comes back from ``ray.get``, as in Ray. The
MLflow store is real (a SQLite file per test)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from arfm.config import ConfigError
from arfm.study import load_study

ROOT = Path(__file__).resolve().parents[2]
MATRIX = """
studies:
  t:
    preset: tiny
    experiment: arfm-pipeline-test
    groups:
      main: {paradigm: [ar, fm], frame_rate: [50], duration: [4.0], batch_size: [8, 16], conditioning: [text]}
"""


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class FakeRay:
    """In-process Ray: ``remote(...)(fn).remote(*args)`` runs ``fn`` at once and keeps its result or error."""

    def __init__(self):
        self.submitted: list[str] = []

    def is_initialized(self):
        return True

    def init(self, **kwargs):
        raise AssertionError("the pipeline must not start Ray here")

    def cluster_resources(self):
        return {"CPU": 3.0}

    def remote(self, **options):
        fake = self

        def wrap(fn):
            class Task:
                def remote(self, *args):
                    fake.submitted.append(args[0]["study_cell"])
                    try:
                        return _Ref(value=fn(*args))
                    except Exception as exc:  # noqa: BLE001 - like Ray: raised again by get()
                        return _Ref(error=exc)

            return Task()

        return wrap

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """A study of four tiny cells, a home folder with its MLflow store, and the fake Ray."""
    monkeypatch.setenv("ARFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "study.yaml").write_text(MATRIX)
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    import arfm.raylogs

    monkeypatch.setattr(arfm.raylogs, "quiet_ray_data", lambda: None)  # Ray Data's settings: not in the stand-in
    return tmp_path, fake


def _runner(tmp_path):
    from rich.console import Console

    from arfm.pipeline import StudyRunner

    study = load_study(tmp_path / "study.yaml", "t")
    return StudyRunner(study, tmp_path / "home", console=Console(record=True, width=200))


def _finish(runner, cell_name, evaluated=False):
    from arfm import tracking

    cell = next(c for c in runner.study.cells if c.name == cell_name)
    cfg = runner.cell_cfg(cell)
    uri, run_id = tracking.start_run(cfg, "train", cell.paradigm)
    tracking.finish_run(uri, run_id)
    if evaluated:
        tracking.client(uri).set_tag(run_id, "evaluated", "true")
    return run_id


def test_unknown_stages_are_an_error_before_anything_runs(setup):
    tmp_path, fake = setup
    runner = _runner(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['trian'\]"):
        runner.run(["data", "trian"])
    assert fake.submitted == [] and runner.timings == {}


def test_finished_cells_are_skipped_and_a_failed_cell_does_not_stop_the_others(setup, monkeypatch):
    import arfm.pipeline as pipeline

    tmp_path, fake = setup
    runner = _runner(tmp_path)
    done = _finish(runner, "ar-50hz-4s-b8-text")
    trained = []

    def train(cfg_json, task, run_name):
        assert run_name.startswith(cfg_json["study_cell"] + "-")  # the grid names the run (its progress file)
        if cfg_json["study_cell"] == "fm-50hz-4s-b8-text":
            raise RuntimeError("out of memory")
        trained.append((cfg_json["study_cell"], task))
        return {"run_id": "r", "final_step": 1}

    monkeypatch.setattr(pipeline, "_train_cell", train)
    assert runner.run(["train"]) is False  # the exit flag: one cell failed
    assert fake.submitted == ["ar-50hz-4s-b16-text", "fm-50hz-4s-b8-text", "fm-50hz-4s-b16-text"]
    assert trained == [("ar-50hz-4s-b16-text", "ar"), ("fm-50hz-4s-b16-text", "fm")]  # after the failure too
    log = runner.console.export_text()
    assert f"ar-50hz-4s-b8-text: finished run {done} reused" in log
    assert "fm-50hz-4s-b8-text: failed: RuntimeError: out of memory" in log
    assert set(runner.timings) == {"train"}

    fake.submitted.clear()
    monkeypatch.setattr(pipeline, "_train_cell", lambda cfg_json, task, run_name: {"run_id": "r"})
    assert runner.run(["train"]) is True  # nothing fails: the flag is true (finished runs are still skipped)
    assert "ar-50hz-4s-b8-text" not in fake.submitted


def test_evaluation_skips_evaluated_runs_and_cells_without_a_finished_run(setup, monkeypatch):
    import arfm.pipeline as pipeline

    tmp_path, fake = setup
    runner = _runner(tmp_path)
    _finish(runner, "ar-50hz-4s-b8-text", evaluated=True)
    todo = {name: _finish(runner, name) for name in ("ar-50hz-4s-b16-text", "fm-50hz-4s-b8-text")}
    seen, audio, floors = [], [], []
    monkeypatch.setattr(pipeline, "_evaluate_cell", lambda cfg_json, run_id: seen.append(
        (cfg_json["study_cell"], run_id)) or {"run_id": run_id})
    monkeypatch.setattr(pipeline, "_baseline_audio", lambda cfg_json, kinds: audio.append(
        (cfg_json["study_cell"], kinds)) or {"run_id": "b"})
    monkeypatch.setattr(pipeline, "_baseline_untrained", lambda cfg_json: floors.append(
        cfg_json["study_cell"]) or {"run_id": "u"})
    assert runner.stage_evaluate() is True
    assert sorted(seen) == sorted(todo.items())
    # the ceiling rows once per frame rate and duration, a floor for every cell (trained or not)
    assert audio == [("ar-50hz-4s-b8-text", ("reference", "codec_latent", "codec_tokens"))]
    assert sorted(floors) == sorted(c.name for c in runner.study.cells)
    log = runner.console.export_text()
    assert "ar-50hz-4s-b8-text: already evaluated" in log
    assert "fm-50hz-4s-b16-text: no finished training run, not evaluated" in log


def test_evaluation_skips_baselines_that_finished(setup, monkeypatch):
    import arfm.pipeline as pipeline
    from arfm import tracking
    from arfm.evaluate import baselines

    tmp_path, fake = setup
    runner = _runner(tmp_path)
    cfg = runner.cell_cfg(runner.study.cells[0])
    for cell in [baselines.audio_cell(cfg, "reference"), baselines.audio_cell(cfg, "codec_tokens")] + [
            baselines.untrained_cell(runner.cell_cfg(c)) for c in runner.study.cells[:3]]:
        uri, run_id = tracking.start_run(cfg.model_copy(update={"study_cell": cell}), "baseline", "")
        tracking.finish_run(uri, run_id)
    audio, floors = [], []
    monkeypatch.setattr(pipeline, "_baseline_audio", lambda cfg_json, kinds: audio.append(kinds) or {})
    monkeypatch.setattr(pipeline, "_baseline_untrained", lambda cfg_json: floors.append(cfg_json["study_cell"]) or {})
    assert runner.stage_evaluate() is True
    assert audio == [("codec_latent",)] and floors == [runner.study.cells[3].name]


# ------------------------------------------------------------------------------------------------- grid
def _grid():
    spec = importlib.util.spec_from_file_location("arfm_grid_script", ROOT / "experiments" / "grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_list_and_only(setup, capsys):
    tmp_path, _ = setup
    grid = _grid()
    assert grid.main(["--study-file", str(tmp_path / "study.yaml"), "--preset", "t", "--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.strip().splitlines()] == [
        "ar-50hz-4s-b8-text", "ar-50hz-4s-b16-text", "fm-50hz-4s-b8-text", "fm-50hz-4s-b16-text"]
    assert grid.main(["--study-file", str(tmp_path / "study.yaml"), "--preset", "t", "--list", "--only", "fm-",
                      "ar-50hz-4s-b8"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.strip().splitlines()] == [
        "ar-50hz-4s-b8-text", "fm-50hz-4s-b8-text", "fm-50hz-4s-b16-text"]
    # the default matrix lists too (experiments/study.yaml)
    assert grid.main(["--list", "--preset", "quick"]) == 0 and "fm-" in capsys.readouterr().out


def test_grid_exit_codes(setup, monkeypatch, capsys):
    import arfm.pipeline as pipeline

    tmp_path, _ = setup
    grid = _grid()
    study = ["--study-file", str(tmp_path / "study.yaml"), "--preset", "t"]
    assert grid.main(study[:2] + ["--preset", "nope"]) == 2  # unknown study
    assert "unknown study 'nope'" in capsys.readouterr().out
    assert grid.main(study + ["--only", "nothing-like-this"]) == 2
    assert grid.main(study + ["--stages", "train,bogus"]) == 2
    assert "unknown stage(s) ['bogus']" in capsys.readouterr().out
    monkeypatch.setattr(pipeline, "_train_cell", lambda cfg_json, task, run_name: {"run_id": "r"})
    assert grid.main(study + ["--stages", "train"]) == 0

    def fail_fm(cfg_json, task, run_name):
        assert cfg_json["train"]["steps"] == 3  # --set reaches every cell
        if task == "fm":
            raise RuntimeError("diverged")
        return {"run_id": "r"}

    monkeypatch.setattr(pipeline, "_train_cell", fail_fm)
    assert grid.main(study + ["--stages", "train", "--set", "train.steps=3"]) == 1
