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
    monkeypatch.setattr(pipeline, "_evaluate_cell", lambda cfg_json, run_id, layer: seen.append(
        (cfg_json["study_cell"], run_id, layer)) or {"run_id": run_id})
    monkeypatch.setattr(pipeline, "_baseline_audio", lambda cfg_json, kinds: audio.append(
        (cfg_json["study_cell"], kinds)) or {"run_id": "b"})
    monkeypatch.setattr(pipeline, "_baseline_untrained", lambda cfg_json, tuned_from, layer: floors.append(
        (cfg_json["study_cell"], tuned_from)) or {"run_id": "u"})
    runner.overrides = ["sample.cfg=1.5", "train.steps=3"]  # the user's sample settings win over a search's
    assert runner.stage_evaluate() is True
    assert sorted(seen) == sorted((cell, run, {"sample": {"cfg": 1.5}}) for cell, run in todo.items())
    # the ceiling rows once per frame rate and duration, a floor for every cell (trained or not), sampled like
    # its trained twin (that run's searched sampling, when there is one)
    assert audio == [("ar-50hz-4s-b8-text", ("reference", "codec_latent", "codec_tokens"))]
    trained = {c.name: runner._finished(runner.cell_cfg(c), "train") for c in runner.study.cells}
    assert sorted(floors) == sorted(trained.items(), key=lambda kv: kv[0]) and trained["fm-50hz-4s-b8-text"]
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
    monkeypatch.setattr(pipeline, "_baseline_untrained",
                        lambda cfg_json, tuned_from, layer: floors.append(cfg_json["study_cell"]) or {})
    assert runner.stage_evaluate() is True
    assert audio == [("codec_latent",)] and floors == [runner.study.cells[3].name]


def test_tune_searches_the_named_cells_once_and_resumes_an_interrupted_search(setup, monkeypatch):
    """The tune stage searches the trained models of the cells its ``search`` names (one space per paradigm),
    skips a model that already carries a searched sampling and a cell without a finished run, resumes a search
    whose Tune experiment exists, and a failed search clears the exit flag without stopping the others."""
    import arfm.tune.search as search
    from arfm import tracking

    tmp_path, _ = setup
    (tmp_path / "study.yaml").write_text(MATRIX + """    search:
      cells: [ar-50hz-4s-b8-text, fm-50hz-4s-b16-text, fm-50hz-4s-b8-text]
      spaces:
        ar: {name: s-ar, prompts: 4, space: {temperature: [1.2, 1.6]}}
        fm: {name: s-fm, prompts: 4, space: {cfg: [1.0, 3.0]}}
""")
    runner = _runner(tmp_path)
    ar = _finish(runner, "ar-50hz-4s-b8-text")
    fm = _finish(runner, "fm-50hz-4s-b8-text")
    calls = []

    def fake_search(source, spec, *, layer, tracking_uri, name, resume, study_cell, prefix, say):
        calls.append((source, spec.name, name, resume, study_cell, layer["sample"]["seconds"]))
        if source == fm:
            raise RuntimeError("no trial completed")
        tracking.attach_tuned_sampling(tracking_uri, source, {"temperature": 1.2}, "test")
        return search.SearchResult(name, tmp_path, "p", tracking_uri, [{}], {"sample": {"temperature": 1.2},
                                                                             "objective": 1.0})

    monkeypatch.setattr(search, "run_search", fake_search)
    search.search_path(f"ar-50hz-4s-b8-text-s-ar-{ar[:8]}").mkdir(parents=True)  # an interrupted search
    assert runner.stage_tune() is False  # the FM search failed
    assert calls == [(ar, "s-ar", f"ar-50hz-4s-b8-text-s-ar-{ar[:8]}", True, "tune-ar-50hz-4s-b8-text", 4.0),
                     (fm, "s-fm", f"fm-50hz-4s-b8-text-s-fm-{fm[:8]}", False, "tune-fm-50hz-4s-b8-text", 4.0)]
    log = runner.console.export_text()
    assert "fm-50hz-4s-b16-text: no finished training run, not searched" in log
    assert "fm-50hz-4s-b8-text: search failed: RuntimeError: no trial completed" in log
    calls.clear()
    monkeypatch.setattr(search, "run_search", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("searched again")))
    tracking.attach_tuned_sampling(tracking.tracking_uri(runner.cell_cfg(runner.study.cells[2])), fm, {"cfg": 3.0},
                                   "test")
    assert runner.stage_tune() is True and calls == []  # both models carry a searched sampling now
    assert "ar-50hz-4s-b8-text: sampling already searched (test)" in runner.console.export_text()


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
