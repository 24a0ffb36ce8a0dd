"""``arfm study create`` from MLflow runs: table 5's systems found in an experiment, their logged clips on the
evaluation's prompts and inpainted spans, the ground truth and anchors from the reference clips, all under opaque
file names; runs on other prompts are refused; ``--generate`` makes clips through the evaluation's generation."""

from __future__ import annotations

import json
import re
import stat

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select
from typer.testing import CliRunner

SR, N = 16000, 3
PCM = 2.0 / 32768  # one step of 16-bit PCM, and rounding


def _tone(freq, seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset of 4 valid clips and an MLflow experiment with AR / FM inpainting runs and an FM text run, each
    with its evaluation's logged clips, captions and config."""
    import os

    from arfm import tracking
    from arfm.config import dump_yaml, resolve
    from arfm.data.manifest import save_audio, write_manifest
    from arfm.evaluate.job import inpaint_spans

    root = tmp_path_factory.mktemp("create")
    os.environ["ARFM_HOME"] = str(root / "home")  # the MLflow artifact root; restored below
    data = root / "data"
    refs = [_tone(200 + 50 * i) for i in range(4)]
    rows = []
    for i, x in enumerate(refs):
        save_audio(data / "audio" / f"c{i}.wav", x, SR)
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": f"caption {i}", "split": "valid",
                     "seconds": 1.0, "sample_rate": SR, "labels": None})
    write_manifest(data, rows)
    cfg = resolve("tiny", overrides=[f"data.dataset={data}", f"data.sample_rate={SR}", "data.segment_seconds=1.0",
                                     "sample.seconds=1.0", "train.seed=4"])
    spans = inpaint_spans(N, 1.0, 4)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = tracking.client(uri)
    exp = tracking.get_or_create_experiment("ex", uri)
    logged = {}

    def run(name, paradigm, conditioning, variants, captions=None, freq=1.0):
        r = client.create_run(exp, run_name=name, tags={"job": "train", "paradigm": paradigm, "evaluated": "true",
                                                        "conditioning": conditioning})
        d = root / "art" / name / "eval"
        (d / "audio").mkdir(parents=True)
        caps = {}
        for v in variants:
            for i in range(N):
                x = refs[i].copy()
                a, b = (int(t * SR) for t in spans[i])
                x[a:b] = _tone((300 + 40 * i) * freq, 1.0)[a:b]
                sf.write(d / "audio" / f"{v}_{i:02d}.wav", x, SR, subtype="PCM_16")
                caps[f"{v}_{i:02d}.wav"] = (captions or {}).get(i, f"caption {i}")
                logged[(name, v, i)] = x
        (d / "audio" / "captions.json").write_text(json.dumps(caps))
        (d / "config.yaml").write_text(dump_yaml(cfg))
        client.log_artifacts(r.info.run_id, str(d), "eval")
        client.set_terminated(r.info.run_id)
        return r.info.run_id

    ids = {"ar": run("ar", "ar", "inpainting", ["inpaint"], freq=1.1),
           "fm": run("fm", "fm", "inpainting", ["inpaint"], freq=1.2),
           "zs": run("zs", "fm", "text", ["default", "inpaint_zs"], freq=1.3),
           "other": run("other", "ar", "text", ["default"], captions={1: "a different caption"})}
    yield {"root": root, "uri": uri, "ids": ids, "refs": refs, "spans": spans, "logged": logged}
    os.environ.pop("ARFM_HOME", None)


def _create(world, name, *args):
    db = f"sqlite:///{world['root'] / 'listening.db'}"
    res = CliRunner().invoke(__import__("arfm.cli", fromlist=["app"]).app, [
        "study", "create", name, "--db", db, "--dir", str(world["root"] / name), "--tracking-uri", world["uri"],
        "--items-per-rater", "8", "--anchors", "1", "--judgments", "30", *args])
    return res, db


def _clips(store, study):
    from arfm.listening.store import Clip, Prompt, System

    with store.session() as s:
        rows = s.execute(select(Prompt.key, Prompt.span_start, Prompt.span_end, System.name, Clip.kind, Clip.file)
                         .join(Prompt, Clip.prompt_id == Prompt.id).outerjoin(System, Clip.system_id == System.id)
                         .where(Clip.study_id == study.id)).all()
    return rows


def _read(study, file):
    x, sr = sf.read(study.media_dir / file, dtype="float32")
    assert sr == SR
    return x


def test_table5_systems_from_an_experiment_with_their_logged_clips(world):
    from arfm.listening.store import Store

    res, db = _create(world, "t5", "--experiment", "ex")
    assert res.exit_code == 0, res.output
    assert "4 systems x 3 prompts = 12 clips, 6 anchor clips" in res.output
    assert "20 raters finishing 8 items each give 30 judgments" in res.output  # 4 x 30 / 6 system items
    store = Store(db)
    study = store.study("t5")
    assert study.systems == ["GT", "AR", "FM", "FM (ZS)"] and study.settings.experiment == "ex"
    rows = _clips(store, study)
    assert all(re.fullmatch(r"[0-9a-f]{32}\.wav", r.file) for r in rows) and len(rows) == 18
    source = {"AR": ("ar", "inpaint"), "FM": ("fm", "inpaint"), "FM (ZS)": ("zs", "inpaint_zs")}
    for r in rows:
        i = int(r.key[1:])
        # the evaluation's span of prompt i, rounded to the model's 50 Hz latent frames
        assert (r.span_start, r.span_end) == (round(world["spans"][i][0] * 50) / 50, round(world["spans"][i][1] * 50)
                                              / 50)
        x, ref = _read(study, r.file), world["refs"][i]
        if r.name in source:
            np.testing.assert_allclose(x, world["logged"][(source[r.name][0], source[r.name][1], i)], atol=PCM)
        elif r.kind in ("test", "reference"):  # the ground truth and the hidden reference: the clip itself
            np.testing.assert_allclose(x, ref, atol=PCM)
        else:  # degraded: the reference, with noise in the span
            a, b = int(round(r.span_start * SR)), int(round(r.span_end * SR))
            np.testing.assert_allclose(np.r_[x[:a], x[b:]], np.r_[ref[:a], ref[b:]], atol=PCM)
            assert np.abs(x[a:b] - ref[a:b]).mean() > 0.1
    token = (world["root"] / "t5" / "admin-token").read_text().strip()
    assert stat.S_IMODE((world["root"] / "t5" / "admin-token").stat().st_mode) == 0o600
    assert store.check_admin(study, token) and token not in res.output
    again, _ = _create(world, "t5", "--experiment", "ex")
    assert again.exit_code == 2 and "exists" in again.output


def test_runs_on_other_prompts_or_without_clips_are_refused(world):
    ids = world["ids"]
    res, _ = _create(world, "bad1", "--task", "quality", "--system", "GT=reference", "--system",
                     f"A={ids['other']}", "--system", f"B={ids['zs']}")
    assert res.exit_code == 2 and "logged clip 1 has caption 'a different caption'" in res.output
    res, _ = _create(world, "bad2", "--system", f"A={ids['ar']}:inpaint_zs")
    assert res.exit_code == 2 and "has no logged clips eval/audio/inpaint_zs_NN.wav" in res.output
    res, _ = _create(world, "bad3", "--system", "A=notarun")
    assert res.exit_code == 2 and "not an MLflow run id" in res.output


def test_generate_makes_the_clips_through_the_evaluations_generation(world, tmp_path, tiny_model):
    """A tiny FM model logged to MLflow: ``--generate --n 2`` gives the clips the evaluation job's own
    generation makes with the study's seed (zero-shot inpainting on the evaluation's spans)."""
    from arfm import tracking
    from arfm.evaluate.job import build_variants, generate_variant, load_prompts
    from arfm.generate import Generator
    from arfm.listening.store import Store

    data = world["root"] / "data"
    cfg, folder = tiny_model(tmp_path, "fm", data, [f"data.sample_rate={SR}", f"tracking.uri={world['uri']}",
                                                    "tracking.experiment=ex"])
    _, run_id = tracking.start_run(cfg, "train", "fm")
    tracking.log_model_dir(world["uri"], run_id, folder)
    tracking.finish_run(world["uri"], run_id)
    res, db = _create(world, "gen", "--system", "GT=reference", "--system", f"ZS={run_id}:inpaint_zs",
                      "--generate", "--n", "2", "--seed", "9", "--items-per-rater", "4")
    assert res.exit_code == 0, res.output
    store = Store(db)
    study = store.study("gen")
    gen = Generator.load(folder, device="cpu")
    ecfg = gen.cfg.model_copy(update={"train": gen.cfg.train.model_copy(update={"seed": 9})})
    prompts = load_prompts(ecfg, 2, 1.0, gen.sample_rate)
    want = generate_variant(gen, prompts, build_variants(gen, ecfg)["inpaint_zs"], ecfg, 1.0)["audio"]
    rows = {(r.key, r.name): r for r in _clips(store, study) if r.kind == "test"}
    assert len(rows) == 4
    for i, p in enumerate(prompts):
        np.testing.assert_allclose(_read(study, rows[(p["id"], "ZS")].file), np.clip(want[i], -1, 1), atol=PCM)
        np.testing.assert_allclose(_read(study, rows[(p["id"], "GT")].file), p["reference"], atol=PCM)
