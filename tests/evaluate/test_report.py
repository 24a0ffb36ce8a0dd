"""`arfm report` on a temporary MLflow store filled with fake runs (tags, metrics, per-sample artifacts)."""

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


METHODS = {"clap": "laion-clap:HTSAT-base:clap.pt", "chord_iou": "chordino vs labels, tetrads",
           "beat_f1": "madmom vs labels", "melody_sim": "chroma-argmax (MusicGen) vs labels"}
FAD_CI = "95% basic bootstrap over clips, both sets resampled (scipy bootstrap, 1000 resamples)"


def _ps(values: dict, variants=(), fad=1.25, skipped=("pq",), entropy=None, fallback=None):
    n = len(next(iter(values.values())))
    ps = PerSample(ids=[f"s{i}" for i in range(n)], captions=["c"] * n)
    for v in (None, *variants):
        for name, vals in values.items():
            extra = {"fallback": fallback} if fallback and name == "chord_iou" else {}
            method = METHODS[name] if not extra else "chroma-template vs labels, tetrads"
            ps.add(MetricResult.from_samples(name, vals, method, **extra), variant=v)
        # FAD's basic bootstrap interval is not symmetric and may lie below the value
        ps.add(MetricResult("fad", fad, "mel-offline", ci=(fad - 0.5, fad + 0.125),
                            extra={"model": "mel-offline", "n": n, "ci_method": FAD_CI}), variant=v)
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
    ar50 = _ps(vals, entropy=[[2.0] * 60, [3.0] * 60])
    ar50.notes.append("8 samples asked, but the valid split of /data holds 4 clips: evaluated n = 4")
    ids["ar50"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-text"), per_sample=ar50)
    ids["fm50"] = _log_run(client, exp_id, tmp, _tags("fm", 50, "fm-50hz-10s-b256-text"),
                           params={"eval.euler_steps": "[10, 50]", "sample.solver": "dopri5",
                                   "eval.shifted_euler": "3.0"},
                           per_sample=_ps(vals, variants=("euler10", "euler50", "inpaint_zs", "nfe10_midpoint",
                                                          "nfe10_heun", "nfe10_shift"), fad=2.0))
    ids["fm25"] = _log_run(client, exp_id, tmp, {**_tags("fm", 25, "fm-25hz-10s-b256-text"),
                                                 "eval/clap.method": f"{METHODS['clap']}; 95% t interval"},
                           metrics={"eval/fad": 0.9, "eval/clap": 0.33})
    ids["ar25"] = _log_run(client, exp_id, tmp, _tags("ar", 25, "ar-25hz-10s-b256-text"),
                           metrics={"train/loss": 3.0})
    ids["fm25_20s"] = _log_run(client, exp_id, tmp, _tags("fm", 25, "fm-25hz-20s-b256-text"),
                               metrics={"eval/fad": 1.1})
    ids["ar50_b8"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b8-text"), metrics={"eval/fad": 3.0})
    ids["ctl"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-controls", "controls"),
                          per_sample=_ps(vals, variants=("single_chords", "single_drums", "single_melody"),
                                         fallback="chroma-template used because Chordino (chord-extractor) "
                                                  "unavailable: import vamp failed: ImportError: x"),
                          entropy=[[1.0] * 50 + [4.0] * 10] * 3)
    ids["inp"] = _log_run(client, exp_id, tmp, _tags("ar", 50, "ar-50hz-10s-b256-inpainting", "inpainting"),
                          per_sample=_ps(vals))
    ids["fm_inp"] = _log_run(client, exp_id, tmp, _tags("fm", 50, "fm-50hz-10s-b256-inpainting", "inpainting"),
                             per_sample=_job_layout(vals, "inpaint"))
    ids["codec"] = _log_run(client, exp_id, tmp, _tags("codec", 50, "codec-50hz", job="codec"),
                            metrics={"recon_si_snr_latent": 7.5, "recon_log_msd_latent": 0.35,
                                     "recon_si_snr_tokens": 5.0, "recon_log_msd_tokens": 0.5})
    ids["broken"] = _log_run(client, exp_id, tmp, _tags("fm", 100, "fm-100hz-10s-b256-text"),
                             metrics={"eval/fad": 0.8}, per_sample=_Broken())
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


class _Broken:
    """A per_sample.json that cannot be read."""

    def metrics(self):
        return {}

    def write(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json")
        return path


def _job_layout(values, variant):
    return _JobLayout(values, variant)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _row(md: str, *cells: str) -> dict[str, str]:
    """The first row of the section's table whose leading cells are ``cells``, as {column header: cell}."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    headers = _cells(lines[0])
    for line in lines[2:]:
        row = _cells(line)
        if row[: len(cells)] == list(cells):
            return dict(zip(headers, row))
    raise AssertionError(f"no row starting {cells!r} in\n{md}")


def _section(md: str, title: str) -> str:
    i = md.index(title)
    j = md.find("\n## ", i + 1)
    return md[i: j if j > 0 else None]


FAD_LABEL = "(mel-offline; basic bootstrap, both sets resampled)"


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
    # n = 4 samples; FAD as its interval was computed ([lo, hi], not symmetric) and named; CLAP: t interval
    assert ar50["n"] == "4" and ids["ar50"][:8] in ar50["run"]
    assert ar50["FAD↓ [mel-offline]"] == f"1.250 [0.750, 1.375] {FAD_LABEL}"
    assert ar50["CLAP↑"].startswith("0.400 ± 0.130 (laion-clap:HTSAT-base:clap.pt)")
    assert ar50["PQ↑"] == "skipped [1]"  # reason listed below
    # every adherence cell names its estimator and reference; chord IOU over the 3 scored samples
    assert ar50["Chords IOU↑"].startswith("0.600 ± ") and ar50["Chords IOU↑"].endswith("(chordino vs labels, tetrads)")
    assert ar50["Beat F1↑"].endswith("(madmom vs labels)")
    assert ar50["Melody Sim.↑"].endswith("(chroma-argmax (MusicGen) vs labels)")
    fm25 = _row(t2, "25", "FM (EnC)")
    assert fm25["FAD↓ [mel-offline]"] == "0.900 (method not recorded; no interval)"  # metric only
    assert fm25["CLAP↑"] == "0.330 (laion-clap:HTSAT-base:clap.pt; no interval)"  # method from the run's tag
    assert _row(t2, "25", "AR")["n"] == "not evaluated"
    broken = _row(t2, "100", "FM (EnC)")  # its per-sample file is unreadable: the metric, said so below
    assert broken["FAD↓ [mel-offline]"] == "0.800 (method not recorded; no interval)"
    for fr, model in [("100", "AR"), ("50", "FM (VAE)"), ("25", "FM (VAE)")]:
        assert _row(t2, fr, model)["n"] == "not run"
    assert "[1] no Audiobox Aesthetics checkpoint given" in md
    notes = _section(md, "## Evaluation notes")
    assert f"`{ids['broken'][:8]}` fm-100hz-10s-b256-text: eval/per_sample.json could not be read (JSONDecodeError" \
        in notes
    assert f"`{ids['ar50'][:8]}` ar-50hz-10s-b256-text: 8 samples asked, but the valid split" in notes
    assert "±" not in "".join(c for line in md.splitlines() if line.startswith("|")
                              for c in _cells(line) if FAD_LABEL in c)

    t8 = _section(md, "## Table 8")
    assert _row(t8, "50", "10")["FAD↓ [mel-offline]"].startswith("2.000 [1.500, 2.125]")
    assert _row(t8, "50", "50")["n"] == "4"
    assert all(_cells(line)[:2] != ["50", "25"] for line in t8.splitlines() if line.startswith("|"))
    assert "dopri5 (run default)" in t8
    steps_col = [_cells(line)[1] for line in t8.splitlines() if line.startswith("| 50 ")]
    at = steps_col.index("10")  # equal-NFE rows right after Euler 10, none after Euler 50 (not evaluated)
    assert steps_col[at: at + 5] == ["10", "midpoint 5 (NFE 10)", "heun 5 (NFE 10)", "10 shifted ×3.0 (NFE 10)", "50"]
    assert _row(t8, "50", "heun 5 (NFE 10)")["n"] == "4"
    assert _row(t8, "100", "10")["n"] == "not run"

    t3 = _section(md, "## Table 3")
    assert _row(t3, "AR", "All")["n"] == "4" and _row(t3, "FM", "All")["n"] == "not run"
    single = _row(t3, "AR", "Single (chords / drums / melody)")
    assert single["FAD↓ [mel-offline]"] == " / ".join([f"1.250 [0.750, 1.375] {FAD_LABEL}"] * 3)
    assert single["Chords IOU↑"].endswith("(chroma-template vs labels, tetrads) [2]")  # fallback, noted below
    assert "[2] chroma-template used because Chordino (chord-extractor) unavailable: import vamp failed" in md
    assert _row(t3, "FM", "Single")["Conditioning"] == "Single" and _row(t3, "FM", "Single")["n"] == "not run"

    t4 = _section(md, "## Table 4")
    assert _row(t4, "AR (fill-in-the-middle)")["n"] == "4"
    fm_inp = _row(t4, "FM (supervised)")  # eval/inpaint/<metric>, the job's per-variant layout
    assert fm_inp["n"] == "4" and fm_inp["FAD↓ [mel-offline]"] == "0.750 (mel-offline; no interval)"
    assert fm_inp["CLAP↑"] == "0.400 ± 0.130 (test)"
    assert _row(t4, "FM (zero-shot)")["FAD↓ [mel-offline]"].startswith("2.000 [1.500, 2.125]")

    t7 = _section(md, "## Table 7")
    assert _row(t7, "25", "20")["FAD↓ [mel-offline]"].startswith("1.100 ")
    assert _row(t7, "50", "10")["FAD↓ [mel-offline]"].startswith("2.000 [1.500, 2.125]")
    assert _row(t7, "100", "10")["FAD↓ [mel-offline]"].startswith("0.800 ") and _row(t7, "50", "20")["n"] == "not run"

    f8 = _section(md, "## Figure 8")
    assert _row(f8, "AR", "10", "8")["FAD↓ [mel-offline]"].startswith("3.000 ")
    assert _row(f8, "FM (EnC)", "30", "64")["n"] == "not run"

    f9 = _section(md, "## Figure 9")
    text = _row(f9, "text (ar-50hz-10s-b256-text)")
    assert [text[k] for k in ("prompts", "steps", "mean H, steps < 50", "mean H, steps ≥ 50")] == \
        ["2", "60", "2.500", "2.500"]
    ctl = _row(f9, "controls (ar-50hz-10s-b256-controls)")
    assert [ctl[k] for k in ("prompts", "steps", "mean H, steps < 50", "mean H, steps ≥ 50")] == \
        ["3", "60", "1.000", "4.000"]

    b = _section(md, "## Appendix B")
    enc = _row(b, "50", "EnCodec")
    assert enc["SI-SNR↑"] == "7.500 (si-snr; no interval)" and enc["log-MSD↓"].startswith("0.350 ")
    assert _row(b, "50", "VAE")["n"] == "not run" and _row(b, "25", "EnCodec")["n"] == "not run"

    runs = _section(md, "## Runs")
    assert ids["codec"][:8] in runs and len([line for line in runs.splitlines() if line.startswith("| `")]) == 11
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
    row = _row(_section(md, "## Table 2"), "50", "FM (EnC)")
    assert row["n"] == "—" and row["FAD↓"].startswith("0.500 ") and "duration 4 s, batch 8" in md
    res = CliRunner().invoke(app, ["report", "--experiment", "nope", "--tracking-uri", uri, "--no-log",
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no MLflow experiment 'nope'" in res.output
