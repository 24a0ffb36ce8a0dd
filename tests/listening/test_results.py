"""``arfm study results`` on seeded simulated judgments: the raters who failed the anchors (and one who never
reached an anchor) are dropped, every cell's n, mean and 95% t interval equal the ones computed here by hand from
the simulation's own record, and the table, plot, CSV and MLflow run (read back by ``arfm report``) carry them."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats

CRITERIA = ("smoothness", "match")
MEANS = {"GroundTruthSys": 8.5, "AutoRegSys": 6.0, "FlowMatchSys": 7.0, "ZeroShotSys": 4.5}


def _simulate(store, study, n_good=10, n_bad=2, seed=11):
    """Raters 0..n_good-1 attentive, the next n_bad inattentive (reference anchors low, degraded high, every
    system item 10), the last one stops before their first anchor. Returns what each rater gave."""
    from arfm.listening.store import Assignment, Clip, System
    from sqlalchemy import select

    rng = np.random.default_rng(seed)
    given = []  # (rater, system or kind, criterion, score)
    tokens = store.add_raters(study, n_good + n_bad + 1)
    for number, token in enumerate(tokens):
        rater = store.rater(study, token)
        with store.session() as s:
            items = s.execute(select(Assignment.public_id, Clip.kind, System.name).join(Clip, Assignment.clip_id == Clip.id)
                              .outerjoin(System, Clip.system_id == System.id)
                              .where(Assignment.rater_id == rater.id).order_by(Assignment.position)).all()
        if number == len(tokens) - 1:
            items = items[: next(i for i, (_, kind, _) in enumerate(items) if kind != "test")]
        for pid, kind, system in items:
            if number < n_good:
                base = {"reference": 9.3, "degraded": 1.5}.get(kind) or MEANS[system]
                scores = {c: int(np.clip(np.rint(rng.normal(base, 1.2)), 1, 10)) for c in CRITERIA}
            else:
                scores = {c: {"reference": 2, "degraded": 9}.get(kind, 10) for c in CRITERIA}
            store.record_play(rater, pid, 1.0)
            store.submit(study, rater, pid, scores)
            given += [(number, system or kind, c, v) for c, v in scores.items()]
    return given


def _by_hand(values):
    x = np.asarray(values, dtype=float)
    n, m, s = len(x), x.mean(), x.std(ddof=1)
    h = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return n, m, m - h, m + h, h


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, make_study):
    root = tmp_path_factory.mktemp("results")
    store, study, _ = make_study(root, name="sim", n_prompts=4, seconds=0.5, items_per_rater=10,
                                 anchors_per_rater=1, seed=3)
    given = _simulate(store, study)
    return root, store, study, given


def test_screening_and_every_cell_as_computed_by_hand(simulated):
    from arfm.listening.results import compute

    _, store, study, given = simulated
    res = compute(store, study)
    kept = {r.rater for r in res.raters if r.kept}
    assert kept == set(range(10))
    assert [r.rater for r in res.raters if r.reason.startswith("failed the anchors")] == [10, 11]
    last = [r for r in res.raters if r.rater == 12]
    assert not last or (not last[0].kept and last[0].reason.startswith("no judgment"))
    for system in MEANS:
        for crit in CRITERIA:
            vals = [v for r, s, c, v in given if r in kept and s == system and c == crit]
            n, m, lo, hi, _ = _by_hand(vals)
            cell = res.cells[(system, crit)]
            assert (cell.n, cell.method) == (n, "t") and n >= 16
            assert cell.mean == pytest.approx(m, abs=1e-12)
            assert (cell.lo, cell.hi) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
            everyone = [v for r, s, c, v in given if s == system and c == crit]
            assert np.mean(everyone) != pytest.approx(m)  # the dropped raters would have moved the cell


def test_arfm_study_results_writes_and_logs_table5_and_the_report_shows_it(simulated, monkeypatch):
    from typer.testing import CliRunner

    from arfm import tracking
    from arfm.cli import app
    from arfm.evaluate.report import write_report

    root, store, study, given = simulated
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("ARFM_HOME", str(root / "home"))
    res = CliRunner().invoke(app, ["study", "results", "sim", "--db", store.url, "--out", str(root / "out"),
                                   "--tracking-uri", uri, "--experiment", "human"])
    assert res.exit_code == 0, res.output
    md = (root / "out" / "table5.md").read_text()
    kept = set(range(10))
    for system in MEANS:
        n, m, _, _, h = _by_hand([v for r, s, c, v in given if r in kept and s == system and c == "match"])
        assert f"{m:.2f} ± {h:.2f} (n={n})" in md.split("| Audio match")[1].split("\n")[0]
    assert "95% t interval of the mean (scipy ttest_1samp)" in md and "kept 10; dropped 2 who failed" in md
    rows = list(csv.DictReader(io.StringIO((root / "out" / "judgments.csv").read_text())))
    assert len(rows) == len(given)
    assert {r["rater"] for r in rows if r["rater_kept"] == "False"} >= {"10", "11"}
    assert sorted((int(r["rater"]), r["system"] or r["kind"], r["criterion"], int(r["score"])) for r in rows) \
        == sorted(given)
    assert (root / "out" / "table5.png").read_bytes()[:4] == b"\x89PNG"
    client = tracking.client(uri)
    run = client.search_runs([client.get_experiment_by_name("human").experiment_id], "tags.job = 'listening'")[0]
    n, m, lo, hi, _ = _by_hand([v for r, s, c, v in given if r in kept and s == "ZeroShotSys" and c == "smoothness"])
    metrics = run.data.metrics
    assert metrics["human/smoothness/zeroshotsys"] == pytest.approx(m)
    assert metrics["human/smoothness/zeroshotsys/n"] == n and metrics["human/smoothness/zeroshotsys/ci_lo"] == \
        pytest.approx(lo)
    report = write_report("human", out=root / "report", uri=uri, log=False)
    assert md.strip().split("\n\n")[2] in report.markdown  # the table itself, cell for cell
    assert (root / "report" / "table5_sim.png").exists() and "![table5_sim](table5_sim.png)" in report.markdown
