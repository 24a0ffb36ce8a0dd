"""`arfm report` on a temporary MLflow store filled with fake runs (tags, metrics, per-sample artifacts)."""

import re

import pytest

from arfm.evaluate.per_sample import PerSample
from arfm.evaluate.results import MetricResult

EXP = "arfm-test"


def _log_run(client, exp_id, tmp_path, tags, metrics=None, params=None, per_sample=None, name=None, entropy=None):
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name=name or tags.get("study_cell"), tags=tags)
    rid = run.info.run_id
    metrics = dict(metrics or {})
    if per_sample is not None:
        metrics.update(per_sample.metrics())
    client.log_batch(rid, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in (params or {}).items()])
    if per_sample is not None:
        path = per_sample.write(tmp_path / rid / "per_sample.json")
        client.log_artifact(rid, str(path), "eval")
    if entropy is not None:  # the evaluation job's separate eval/entropy.json
        import json

        p = tmp_path / rid / "entropy.json"
        p.write_text(json.dumps({"per_prompt": entropy}))
        client.log_artifact(rid, str(p), "eval")
    client.set_terminated(rid, "FINISHED")
    return rid


def _tags(paradigm, fr, cell, conditioning="text", job="train", latent="encodec"):
    return {"paradigm": paradigm, "job": job, "frame_rate": str(fr), "study_cell": cell, "conditioning": conditioning,
            "latent": latent, "preset": "tiny", "git_commit": "unknown"}


def _ps(values: dict, variants=(), fad=1.25, skipped=("pq",), entropy=None):
    n = len(next(iter(values.values())))
    ps = PerSample(ids=[f"s{i}" for i in range(n)], captions=["c"] * n)
    for v in (None, *variants):
        for name, vals in values.items():
            ps.add(MetricResult.from_samples(name, vals, "test"), variant=v)
        ps.add(MetricResult("fad", fad, "mel-offline", ci=(fad - 0.25, fad + 0.25),
                            extra={"model": "mel-offline", "n": n}), variant=v)
    for s in skipped:
        ps.add(MetricResult.skip(s, "no Audiobox Aesthetics checkpoint given", "audiobox-aesthetics"))
    if entropy is not None:
        ps.add_entropy(entropy)
    return ps


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXP, artifact_location=(tmp / "artifacts").as_uri())
    vals = {"clap": [0.3, 0.4, 0.5, 0.4], "chord_iou": [0.5, 0.6, 0.7, None], "beat_f1": [1.0, 0.5, 0.5, 1.0],
            "melody_sim": [0.2, 0.3, 0.2, 0.3]}
    ids = {}
    ids["ar50"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-text"),
                           per_sample=_ps(vals, entropy=[[2.0] * 60, [3.0] * 60]))
    ids["fm50"] = _log_run(client, exp_id, tmp, _tags("fm", 50, "fm-50hz-10s-b256-text"),
                           params={"eval.euler_steps": "[10, 50]", "sample.solver": "dopri5"},
                           per_sample=_ps(vals, variants=("euler10", "euler50", "inpaint_zs"), fad=2.0))
    ids["fm25"] = _log_run(client, exp_id, tmp, _tags("fm", 25, "fm-25hz-10s-b256-text"),
                           metrics={"eval/fad": 0.9, "eval/clap": 0.33})
    ids["ar25"] = _log_run(client, exp_id, tmp, _tags("ar", 25, "ar-25hz-10s-b256-text"),
                           metrics={"train/loss": 3.0})
    ids["fm25_20s"] = _log_run(client, exp_id, tmp, _tags("fm", 25, "fm-25hz-20s-b256-text"),
                               metrics={"eval/fad": 1.1})
    ids["ar50_b8"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b8-text"), metrics={"eval/fad": 3.0})
    ids["ctl"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-controls", "controls"),
                          per_sample=_ps(vals, variants=("single_chords", "single_drums", "single_melody")),
                          entropy=[[1.0] * 50 + [4.0] * 10] * 3)
    ids["inp"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-inpainting", "inpainting"),
                          per_sample=_ps(vals))
    ids["fm_inp"] = _log_run(client, exp_id, tmp, _tags("fm", 50, "fm-50hz-10s-b256-inpainting", "inpainting"),
                             per_sample=_job_layout(vals, "inpaint"))
    ids["codec"] = _log_run(client, exp_id, tmp, _tags("codec", 50, "codec-50hz", job="codec"),
                            metrics={"recon_si_snr_latent": 7.5, "recon_log_msd_latent": 0.35,
                                     "recon_si_snr_tokens": 5.0, "recon_log_msd_tokens": 0.5})
    _log_run(client, exp_id, tmp, {"job": "report", "study_cell": "report"}, metrics={"eval/fad": 99.0})
    small = client.create_experiment(EXP + "-cli", artifact_location=(tmp / "artifacts-cli").as_uri())
    _log_run(client, small, tmp, _tags("fm", 50, "fm-50hz-4s-b8-text"), metrics={"eval/fad": 0.5})
    return uri, ids


class _JobLayout:
    """A per_sample.json in the evaluation job's per-variant row layout (converted by the reader)."""

    def __init__(self, values, variant):
        self.rows = {name: MetricResult.from_samples(name, v, "test").to_dict() for name, v in values.items()}
        self.rows["fad"] = MetricResult("fad", 0.75, "mel-offline", extra={"model": "mel-offline", "n": 4}).to_dict()
        self.variant = variant

    def metrics(self):
        return {f"eval/{self.variant}/{k}": r["value"] for k, r in self.rows.items()}

    def write(self, path):
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"n": 4, "variants": {self.variant: self.rows},
                                    "prompts": [{"id": f"p{i}", "caption": "c"} for i in range(4)]}))
        return path


def _job_layout(values, variant):
    return _JobLayout(values, variant)


def _row(md: str, *cells: str) -> str:
    """The first markdown row starting with these cells."""
    start = "| " + " | ".join(cells) + " |"
    rows = [line for line in md.splitlines() if line.startswith(start)]
    assert rows, f"no row starting {start!r}"
    return rows[0]


def _section(md: str, title: str) -> str:
    i = md.index(title)
    j = md.find("\n## ", i + 1)
    return md[i: j if j > 0 else None]


def test_report_tables_figures_and_report_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    from arfm.evaluate.report import write_report

    uri, ids = store
    rep = write_report(EXP, out=tmp_path / "report", uri=uri, log=True)
    md = rep.path.read_text()
    assert md == rep.markdown

    t2 = _section(md, "## Table 2")
    assert "duration 10 s, batch 256" in t2 and "FAD↓ [mel-offline]" in t2
    ar50 = _row(t2, "50", "AR")
    # n = 4 samples; FAD 1.250 ± 0.250 (bootstrap CI from the file); CLAP mean 0.4 with a t interval
    assert "| 4 | 1.250 ± 0.250 | 0.400 ± " in ar50 and ids["ar50"][:8] in ar50
    assert re.search(r"\| skipped \[1\] \|", ar50)  # PQ skipped, reason listed below
    assert "0.600 ± " in ar50  # chord IOU over the 3 scored samples
    assert "| 0.900 |" in _row(t2, "25", "FM (EnC)")  # metric only: no interval
    assert "not evaluated" in _row(t2, "25", "AR")
    for fr, model in [("100", "AR"), ("100", "FM (EnC)"), ("50", "FM (VAE)"), ("25", "FM (VAE)")]:
        assert "| not run |" in _row(t2, fr, model)
    assert "[1] no Audiobox Aesthetics checkpoint given" in md

    t8 = _section(md, "## Table 8")
    assert "| 2.000 ± 0.250 |" in _row(t8, "50", "10") and "| 4 |" in _row(t8, "50", "50")
    assert "| 50 | 25 |" not in t8  # the run's eval.euler_steps ([10, 50]) set the expected rows
    assert "dopri5 (run default)" in t8
    assert "not run" in _row(t8, "100", "10")

    t3 = _section(md, "## Table 3")
    assert "| 4 |" in _row(t3, "AR", "All") and "not run" in _row(t3, "FM", "All")
    single = _row(t3, "AR", "Single (chords / drums / melody)")
    assert "1.250 ± 0.250 / 1.250 ± 0.250 / 1.250 ± 0.250" in single
    assert "not run" in _row(t3, "FM", "Single")

    t4 = _section(md, "## Table 4")
    assert "| 4 |" in _row(t4, "AR (fill-in-the-middle)")
    assert "| 4 | 0.750 | 0.400 ± 0.130 |" in _row(t4, "FM (supervised)")  # eval/inpaint/<metric>, job layout
    assert "| 2.000 ± 0.250 |" in _row(t4, "FM (zero-shot)")

    t7 = _section(md, "## Table 7")
    assert "| 1.100 |" in _row(t7, "25", "20") and "| 2.000 ± 0.250 |" in _row(t7, "50", "10")
    assert "not run" in _row(t7, "100", "10")

    f8 = _section(md, "## Figure 8")
    assert "| 3.000 |" in _row(f8, "AR", "10", "8") and "not run" in _row(f8, "FM (EnC)", "30", "64")

    f9 = _section(md, "## Figure 9")
    assert "| 2 | 60 | 2.500 | 2.500 |" in _row(f9, "text (ar-50hz-10s-b256-text)")
    assert "| 3 | 60 | 1.000 | 4.000 |" in _row(f9, "controls (ar-50hz-10s-b256-controls)")

    b = _section(md, "## Appendix B")
    assert "| 7.500 |" in _row(b, "50", "EnCodec") and "| 0.350 |" in _row(b, "50", "EnCodec")
    assert "not run" in _row(b, "50", "VAE") and "not run" in _row(b, "25", "EnCodec")

    runs = _section(md, "## Runs")
    assert ids["codec"][:8] in runs and len([line for line in runs.splitlines() if line.startswith("| `")]) == 10
    assert "99.0" not in md  # the earlier report run is not a model run

    names = {p.name for p in rep.figures}
    assert {"table2_paradigm_framerate.png", "fig3_euler_steps.png", "fig4_framerate_duration.png",
            "fig8_batch_duration.png", "fig9_entropy.png"} <= names
    for p in rep.figures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(rep.run_id)
    assert run.data.tags["job"] == "report"
    logged = {a.path for a in client.list_artifacts(rep.run_id, "report")}
    assert "report/report.md" in logged and "report/fig9_entropy.png" in logged


def test_cli_report_and_unknown_experiment(store, tmp_path):
    from typer.testing import CliRunner

    from arfm.cli import app

    uri, _ = store
    res = CliRunner().invoke(app, ["report", "--experiment", EXP + "-cli", "--tracking-uri", uri, "--out",
                                   str(tmp_path / "r"), "--no-log"])
    assert res.exit_code == 0, res.output
    assert "report written to" in res.output and "table2_paradigm_framerate.png" in res.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| 50 | FM (EnC) | — | 0.500 |" in md and "duration 4 s, batch 8" in md
    res = CliRunner().invoke(app, ["report", "--experiment", "nope", "--tracking-uri", uri, "--no-log",
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no MLflow experiment 'nope'" in res.output
