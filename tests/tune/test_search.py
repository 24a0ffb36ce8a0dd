"""Sampling searches on tiny trained models (one Ray instance for the module): the MLflow parent and child runs,
the recorded best, one model load per worker, a trial scoring what the evaluation scores, the best sampling
reaching `arfm evaluate`, a killed search resumed without repeating a finished trial, early stopping (ASHA over
prompts) and a multi-objective Optuna search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from arfm import tracking

FM4 = {"name": "t-fm", "paradigm": "fm", "prompts": 4,
       "space": {"cfg": [1.0, 3.0], "solver": [{"solver": "euler", "steps": 2}, {"solver": "euler", "steps": 4}]}}
AR4 = {"name": "t-ar", "paradigm": "ar", "prompts": 4,
       "space": {"temperature": [1.2, 2.0], "truncation": [{"top_p": 0.8, "top_k": 0}, {"top_k": 250, "top_p": 0.0}]}}


def _children(uri, parent):
    c = tracking.client(uri)
    exp = c.get_run(parent).info.experiment_id
    return c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")


def _check_structure(uri, res, spec, model_run):
    """Parent run, one child per trial with its params and metrics; the recorded best is the child with the
    lowest objective; the model's run carries it."""
    c = tracking.client(uri)
    parent = c.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["job"] == "tune"
    assert parent.data.tags["tune/model_run"] == model_run and parent.data.metrics["trials_complete"] == 4
    kids = _children(uri, res.parent_run_id)
    assert len(kids) == 4 and len({k.data.tags["tune/trial_id"] for k in kids}) == 4
    assert all(k.info.status == "FINISHED" and k.data.tags["job"] == "tune_trial" for k in kids)
    assert {k.info.run_id for k in kids} == {t["run_id"] for t in res.trials}
    for k in kids:
        m = k.data.metrics
        assert m["objective"] == m["eval/fad"] and m["prompts_scored"] == spec["prompts"]
        assert m["seconds_per_sample"] > 0 and m["nfe_per_sample"] > 0
        assert k.data.tags["eval/fad.method"].startswith("mel-offline vs 4 train clips; 95% basic bootstrap")
    best = min(kids, key=lambda k: k.data.metrics["objective"])
    assert parent.data.tags["tune/best_trial"] == best.data.tags["tune/trial_id"]
    assert parent.data.tags["tune/best_run"] == best.info.run_id
    assert parent.data.metrics["best_objective"] == best.data.metrics["objective"]
    assert res.best["run_id"] == best.info.run_id
    assert {k: v for k, v in best.data.params.items() if k.startswith("sample.")} == {
        f"sample.{k}": str(v) for k, v in res.best["sample"].items()}
    tuned = tracking.tuned_sampling(model_run, uri)
    assert tuned["sample"] == res.best["sample"] and res.parent_run_id in tuned["from"]
    return kids, best


@pytest.fixture(scope="module")
def fm4(trained_runs, tune_home, ray_two_cpus):
    """The 4-trial FM search (Euler 2 / 4 steps x CFG 1 / 3) over the trained FM model."""
    from arfm.tune.search import run_search

    return run_search(trained_runs["fm"], FM4, tracking_uri=tune_home[1], name="fm4")


@pytest.fixture(scope="module")
def ar4(trained_runs, tune_home, ray_two_cpus):
    """The 4-trial AR search (temperature 1.2 / 2.0 x top-p 0.8 / top-k 250) over the trained AR model."""
    from arfm.tune.search import run_search

    return run_search(trained_runs["ar"], AR4, tracking_uri=tune_home[1], name="ar4")


def test_fm_search_records_parent_children_and_best_and_loads_the_model_once(trained_runs, tune_home, fm4):
    _, uri = tune_home
    res = fm4
    kids, best = _check_structure(uri, res, FM4, trained_runs["fm"])
    assert {(k.data.params["sample.cfg"], k.data.params["sample.steps"]) for k in kids} == {
        ("1.0", "2"), ("1.0", "4"), ("3.0", "2"), ("3.0", "4")}
    assert {k.data.metrics["nfe_per_sample"] for k in kids} == {2.0, 4.0}  # Euler: one call per step
    # one trial at a time on 2 CPUs, all four on one worker process that loaded the model once
    assert res.concurrency.startswith("1 trial at a time: the cluster has 2 CPUs")
    assert len({k.data.metrics["worker_pid"] for k in kids}) == 1
    assert [t["generator_loads"] for t in res.trials] == [1, 1, 1, 1]
    # the best trial's FAD is the evaluation's for its settings: same prompts and seeds, same audio, FAD against
    # the real set of train clips (embedded here by the metric itself, in the trial once by the driver)
    from arfm.evaluate.job import (eval_settings, evaluation_config, generate_variant, load_background,
                                   load_prompts, score_metric)
    from arfm.generate import Generator

    gen = Generator.load(trained_runs["fm"], tracking_uri=uri, device="cpu")
    cfg = evaluation_config(gen.cfg, {"sample": res.best["sample"]})
    prompts = load_prompts(cfg, 4, 1.0, gen.sample_rate)
    background = load_background(cfg, 1.0, gen.sample_rate, {p["id"] for p in prompts})
    audio = generate_variant(gen, prompts, {"sample": {}}, cfg, 1.0)["audio"]
    fad = score_metric("fad", audio, background, [p["caption"] for p in prompts], gen.sample_rate,
                       eval_settings(cfg, background))[0]
    assert fad["value"] == pytest.approx(best.data.metrics["eval/fad"], rel=1e-9)
    assert tuple(fad["ci"]) == pytest.approx((best.data.metrics["ci/fad_lo"], best.data.metrics["ci/fad_hi"]))


def test_ar_search_and_arfm_evaluate_samples_with_its_best_unless_told_otherwise(trained_runs, tune_home, ar4,
                                                                                tmp_path):
    from typer.testing import CliRunner

    from arfm.cli import app
    from arfm.models.patterns import n_steps

    _, uri = tune_home
    res = ar4
    kids, best = _check_structure(uri, res, AR4, trained_runs["ar"])
    assert {k.data.metrics["nfe_per_sample"] for k in kids} == {float(n_steps(50, 4))}  # 1 s at 50 Hz, 4 codebooks
    want = res.best["sample"]
    (tmp_path / "captions.txt").write_text("calm piano\nfast rock\n")  # no references: a cheap evaluation
    base = ["evaluate", "--run", trained_runs["ar"], "--prompts", str(tmp_path / "captions.txt"), "--n", "2",
            "--set", f"tracking.uri={uri}"]
    out = CliRunner().invoke(app, base)
    assert out.exit_code == 0, out.output
    tags = tracking.client(uri).get_run(trained_runs["ar"]).data.tags
    assert [tags[f"eval/sample.{k}"] for k in ("temperature", "top_p", "top_k")] == [
        str(want["temperature"]), str(want["top_p"]), str(want["top_k"])]
    assert tags["eval/sample_from"].startswith(f"tuned: search run {res.parent_run_id}")
    assert f"sampling: tuned: search run {res.parent_run_id}" in out.output
    out = CliRunner().invoke(app, base + ["--set", "sample.temperature=0.7"])  # told otherwise: the user wins
    assert out.exit_code == 0, out.output
    tags = tracking.client(uri).get_run(trained_runs["ar"]).data.tags
    assert tags["eval/sample.temperature"] == "0.7" and tags["eval/sample.top_p"] == str(want["top_p"])
    out = CliRunner().invoke(app, base + ["--untuned"])
    tags = tracking.client(uri).get_run(trained_runs["ar"]).data.tags
    assert out.exit_code == 0 and tags["eval/sample_from"] == "the run's own sample settings"
    own = tracking.client(uri).get_run(trained_runs["ar"]).data.params
    got = [tags[f"eval/sample.{k}"] for k in ("temperature", "top_p", "top_k")]
    assert got == [own[f"sample.{k}"] for k in ("temperature", "top_p", "top_k")]  # the run's own
    assert got != [str(want[k]) for k in ("temperature", "top_p", "top_k")]  # which the searched best is not


def test_arfm_serve_defaults_to_the_searched_sampling(trained_runs, tune_home, fm4):
    """A served model's request default is its searched sampling, under the spec's own overrides."""
    from arfm.serving.config import ModelSpec
    from arfm.serving.models import LoadedModel

    _, uri = tune_home
    want = tracking.tuned_sampling(trained_runs["fm"], uri)
    served = LoadedModel(ModelSpec(name="fm", source=trained_runs["fm"], tracking_uri=uri, device="cpu"))
    assert {k: served.info()["sample"][k] for k in want["sample"]} == want["sample"]
    assert served.info()["sample_from"] == f"tuned: {want['from']}"
    served = LoadedModel(ModelSpec(name="fm", source=trained_runs["fm"], tracking_uri=uri, device="cpu",
                                   sample={"cfg": 7.5}))
    assert served.sample.cfg == 7.5 and served.sample.steps == want["sample"]["steps"]


def _md_rows(block: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``block`` as ``{column: cell}``."""
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def test_the_report_shows_each_search_from_mlflow(trained_runs, tune_home, fm4, ar4, tmp_path):
    """The study report (as the grid's report stage writes it, from the MLflow store alone) has a section with
    one table per search: each trial's searched settings and objective as its child run logged them, the best
    (lowest objective) marked, and how the trials were searched and scored."""
    from arfm.evaluate.report import write_report

    _, uri = tune_home
    text = write_report("tune-test", out=tmp_path, uri=uri, log=False).path.read_text()
    section = text.split("\n## Sampling searches")[1].split("\n## ")[0]
    c = tracking.client(uri)
    for res, spec, paradigm in ((fm4, FM4, "fm"), (ar4, AR4, "ar")):
        block = section.split(f"\n### {res.name} — ")[1].split("\n### ")[0]
        assert block.startswith(f"{paradigm.upper()} model `{trained_runs[paradigm][:8]}`")
        assert f"Searcher grid, space `{spec['name']}`; objective fad (minimized) (fad: mel-offline vs 4 train " \
               "clips" in block and f"Search run `{res.parent_run_id[:8]}`" in block
        rows = {r["trial"]: r for r in _md_rows(block)}
        kids = {k.data.tags["tune/trial_id"]: k for k in _children(uri, res.parent_run_id)}
        assert set(rows) == set(kids) and len(rows) == 4
        for trial, kid in kids.items():
            settings = {k.removeprefix("sample."): v for k, v in kid.data.params.items() if k.startswith("sample.")}
            assert {k: rows[trial][k] for k in settings} == settings
            assert rows[trial]["objective [95% interval]"].split(" [")[0] == f"{kid.data.metrics['objective']:.4g}"
        best = min(kids, key=lambda t: kids[t].data.metrics["objective"])
        assert [t for t, r in rows.items() if r["best"] == "★"] == [best]
        assert c.get_run(res.parent_run_id).data.tags["tune/best_trial"] == best


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_killed_search_resumes_running_only_the_missing_trials(trained_runs, tune_home, ray_two_cpus, tmp_path):
    """`arfm tune` in its own process (and its own Ray) is killed with its process group once two trials have
    finished; `--resume` then runs the others, attaching to the same child runs: no finished trial runs again
    (each keeps the single report of the killed process's worker) and no child run is duplicated."""
    from arfm.tune.search import run_search

    home, uri = tune_home
    space = tmp_path / "fm.yaml"
    import yaml

    space.write_text(yaml.safe_dump({**FM4, "name": "t-kill"}))
    env = {**os.environ, "ARFM_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", "from arfm.cli import main; main()", "tune", "--model", trained_runs["fm"],
           "--space", str(space), "--name", "killed"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        state = home / "ray_results" / "tune" / "killed" / "arfm_search.json"
        _wait_for(state.is_file, 120, "the search to start")
        parent = json.loads(state.read_text())["parent_run_id"]
        finished = _wait_for(lambda: [k for k in _children(uri, parent) if k.info.status == "FINISHED"] if len(
            [k for k in _children(uri, parent) if k.info.status == "FINISHED"]) >= 2 else None, 120,
            "two finished trials")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {k.data.tags["tune/trial_id"]: k for k in _children(uri, parent) if k.info.status == "FINISHED"}
    assert 2 <= len(before) < 4, "the search finished before it could be killed"
    killed_pids = {k.data.metrics["worker_pid"] for k in before.values()}

    res = run_search(trained_runs["fm"], str(space), tracking_uri=uri, name="killed", resume=True)
    kids = _children(uri, parent)
    assert res.parent_run_id == parent and len(kids) == 4 and len({k.data.tags["tune/trial_id"] for k in kids}) == 4
    c = tracking.client(uri)
    for k in kids:
        history = c.get_metric_history(k.info.run_id, "worker_pid")
        assert len(history) == 1, f"trial {k.data.tags['tune/trial_id']} reported {len(history)} times"
        ran_before = k.data.tags["tune/trial_id"] in before
        assert (history[0].value in killed_pids) == ran_before  # finished before the kill: not run again
    resumed = [t for t in res.trials if t["trial_id"] not in before]
    assert len(resumed) == 4 - len(before) and all(t["complete"] for t in res.trials)
    assert c.get_run(parent).info.status == "FINISHED" and res.best is not None


def test_early_stopping_scores_slices_of_prompts_and_stops_hopeless_trials(trained_runs, tune_home, ray_two_cpus):
    """ASHA with prompts scored as its time unit: each trial reports after 2 and after 4 prompts unless it is
    stopped at the first rung; a stopped trial is worse there than a trial before it, and is no candidate."""
    from arfm.tune.search import run_search

    _, uri = tune_home
    spec = {**FM4, "name": "t-asha", "early_stopping": {"slice": 2, "reduction_factor": 2},
            "space": {"cfg": [3.0, 0.0, 1.0, 6.0], "solver": [{"solver": "euler", "steps": 3}]}}
    attached = tracking.tuned_sampling(trained_runs["fm"], uri)
    res = run_search(trained_runs["fm"], spec, tracking_uri=uri, name="asha", attach=False)
    c = tracking.client(uri)
    rung = {}
    for t in res.trials:
        steps = [m.step for m in c.get_metric_history(t["run_id"], "objective")]
        assert steps in ([2], [2, 4])
        rung[t["trial_id"]] = next(m.value for m in c.get_metric_history(t["run_id"], "objective") if m.step == 2)
        assert t["complete"] == (steps == [2, 4])
        assert t["status"] == ("complete" if t["complete"] else "stopped early after 2 prompts")
    stopped = [t for t in res.trials if not t["complete"]]
    assert stopped and len(stopped) < len(res.trials)
    order = [t["trial_id"] for t in res.trials]
    for t in stopped:
        earlier = [rung[o] for o in order[: order.index(t["trial_id"])]]
        assert earlier and rung[t["trial_id"]] > min(earlier)
    assert res.best["complete"] and res.best["objective"] == min(t["objective"] for t in res.trials if t["complete"])
    assert tracking.tuned_sampling(trained_runs["fm"], uri) == attached  # attach=False: the model keeps its own


def test_optuna_multi_objective_samples_the_space_and_marks_the_pareto_front(trained_runs, tune_home, ray_two_cpus):
    from arfm.tune.search import run_search

    _, uri = tune_home
    spec = {"name": "t-optuna", "paradigm": "fm", "prompts": 2, "searcher": "optuna", "num_samples": 3,
            "multi_objective": True, "space": {"cfg": {"uniform": [1.0, 5.0]}, "steps": {"randint": [2, 6]}}}
    res = run_search(trained_runs["fm"], spec, tracking_uri=uri, name="optuna", attach=False)
    assert len(res.trials) == 3 and all(t["complete"] for t in res.trials)
    assert all(1.0 <= t["sample"]["cfg"] <= 5.0 and 2 <= t["sample"]["steps"] < 6 for t in res.trials)
    for t in res.trials:
        dominated = any(o["objective"] <= t["objective"] and o["seconds_per_sample"] <= t["seconds_per_sample"]
                        and (o["objective"], o["seconds_per_sample"]) != (t["objective"], t["seconds_per_sample"])
                        for o in res.trials)
        assert t["pareto"] == (not dominated)
    assert res.best["objective"] == min(t["objective"] for t in res.trials) and res.best["pareto"]
    assert tracking.client(uri).get_run(res.parent_run_id).data.tags["tune/searcher"] == "optuna"
