"""Ceiling and floor rows: FAD's real set, the reference / codec / untrained runs, and their rows in the report."""

import json

import numpy as np
import pytest

from arfm.config import resolve

SR = 32000


def test_fads_real_set_is_train_clips_never_a_prompt(corpus_with_train):
    corpus = corpus_with_train
    from arfm.evaluate.prompts import load_background, load_prompts

    cfg = resolve("tiny", overrides=[f"data.dataset={corpus}", "eval.fad_reference_clips=2"])
    prompts = load_prompts(cfg, 8, 1.0, SR)
    notes = []
    bg = load_background(cfg, 1.0, SR, {p["id"] for p in prompts}, notes)
    assert [p["id"] for p in prompts] == ["c0", "c1"] and len(bg) == 2 and all(b.shape == (SR,) for b in bg)
    from arfm.data.manifest import load_audio, read_manifest

    rows = {r["id"]: r for r in read_manifest(corpus)}
    assert np.array_equal(bg[0], load_audio(corpus, rows["c2"])[:SR])  # the train clips, in id order
    assert notes == []
    every = load_background(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"fad_reference_clips": 9})}),
                            1.0, SR, set(), notes)
    assert len(every) == 3 and "holds 3 train clips (9 asked)" in notes[0]  # prompts excluded only when given
    prompts_only = resolve("tiny", overrides=[f"data.dataset={corpus}", "eval.fad_reference=prompts"])
    assert load_background(prompts_only, 1.0, SR, set()) is None


@pytest.mark.slow
def test_ceiling_and_floor_runs_and_their_rows_in_the_report(corpus_with_train, tmp_path, tiny_model, ray_two_cpus,
                                                            monkeypatch):
    corpus = corpus_with_train
    from arfm import tracking
    from arfm.evaluate.baselines import evaluate_audio_baselines, evaluate_untrained
    from arfm.evaluate.chords import chord_iou_metric
    from arfm.evaluate.job import load_prompts
    from arfm.evaluate.report import write_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ARFM_HOME", str(tmp_path / "home"))
    cfg, folder = tiny_model(tmp_path, "ar", corpus, [f"tracking.uri={uri}", "tracking.experiment=b",
                                                     "codec.path=" + str(tmp_path / "codec"),
                                                     "eval.fad_reference_clips=3", "study_cell=ar-50hz-1s-b8-text"])
    runs = evaluate_audio_baselines(cfg)
    client = tracking.client(uri)
    assert set(runs) == {"reference", "codec_latent", "codec_tokens"}
    ref = client.get_run(runs["reference"]).data
    assert ref.tags["job"] == "baseline" and ref.tags["baseline"] == "reference" and ref.tags["evaluated"] == "true"
    assert ref.tags["study_cell"] == "baseline-reference-50hz-1s"
    assert ref.metrics["eval/melody_sim"] == pytest.approx(1.0)  # a clip against itself, by construction
    prompts = load_prompts(cfg, 2, 1.0, SR)
    direct = chord_iou_metric([p["reference"] for p in prompts], [p["labels"]["chords"] for p in prompts], SR)
    assert ref.metrics["eval/chord_iou"] == pytest.approx(direct.value)  # real audio against its exact labels
    assert ref.tags["eval/fad.method"].startswith("mel-offline vs 3 train clips")
    lat, tok = (client.get_run(runs[k]).data for k in ("codec_latent", "codec_tokens"))
    assert lat.metrics["eval/fad"] != ref.metrics["eval/fad"] != tok.metrics["eval/fad"]

    meta = json.loads((folder / "meta.json").read_text())
    floor = evaluate_untrained(cfg, meta)
    f = client.get_run(floor).data
    assert f.tags["baseline"] == "untrained" and f.tags["paradigm"] == "ar" and f.tags["conditioning"] == "text"
    assert f.tags["study_cell"] == "baseline-untrained-ar-50hz-1s-b8-text" and "eval/fad" in f.metrics
    # a trained run beside them: the report puts the baselines under it, in the same table
    _, trained = tracking.start_run(cfg, "train", "ar")
    tracking.log_model_dir(uri, trained, folder)
    tracking.finish_run(uri, trained)
    from arfm.evaluate.job import evaluate_run

    evaluate_run(cfg, run_id=trained)
    md = write_report("b", out=tmp_path / "report", uri=uri, log=False).markdown
    table2 = md.split("## Table 2")[1].split("## Table 3")[0]
    labels = [line.split("|")[2].strip() for line in table2.splitlines() if line.startswith("| 50 ")]
    assert labels[labels.index("AR"):] [:1] == ["AR"]
    assert {"reference clips — ceiling", "codec recon., latent — FM ceiling", "codec recon., RVQ tokens — AR ceiling",
            "untrained AR — floor"} <= set(labels)
    assert labels.index("AR") < labels.index("reference clips — ceiling")
    assert "## The sound" in md and (tmp_path / "report" / "spectrograms.png").exists()
    assert (tmp_path / "report" / "audio" / "reference_1.wav").exists()
