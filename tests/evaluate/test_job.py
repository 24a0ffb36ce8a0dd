"""The evaluation job on a tiny saved model and a two-clip corpus: prompts, label cropping, variants, the config
merge, and what an evaluation logs on the run (the settings it used, the methods, the `evaluated` tag)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from arfm.config import ConfigError, resolve
from arfm.evaluate.job import (build_variants, crop_labels, evaluation_config, generate_variant, load_prompts,
                               user_layer)

SR = 32000


# ------------------------------------------------------------------------------------------------ prompts
def test_prompts_are_distinct_clips_and_n_is_the_pool_when_smaller(two_clip_corpus):
    cfg = resolve("tiny", overrides=[f"data.dataset={two_clip_corpus}"])
    notes = []
    prompts = load_prompts(cfg, 8, 1.0, SR, notes)
    assert [p["id"] for p in prompts] == ["c0", "c1"]  # no clip repeated to reach 8
    assert all(p["reference"].shape == (SR,) and p["labels"] for p in prompts)
    assert len(notes) == 1 and "8 samples asked" in notes[0] and "evaluated n = 2" in notes[0]
    quiet = []
    assert [p["id"] for p in load_prompts(cfg, 1, 1.0, SR, quiet)] == ["c0"] and quiet == []
    longer = load_prompts(cfg, 2, 2.0, SR)  # a 1.5 s clip evaluated over 2 s: zero-padded reference
    assert longer[0]["reference"].shape == (2 * SR,) and not longer[0]["reference"][int(1.5 * SR):].any()


def test_prompts_from_a_manifest_use_its_valid_split_and_a_txt_its_distinct_lines(two_clip_corpus, tmp_path):
    from arfm.data.manifest import read_manifest, write_manifest

    rows = read_manifest(two_clip_corpus)
    rows[0] = {**rows[0], "split": "train", "path": str(two_clip_corpus / rows[0]["path"])}
    rows[1] = {**rows[1], "path": str(two_clip_corpus / rows[1]["path"])}
    write_manifest(tmp_path, rows)
    cfg = resolve("tiny", overrides=[f"eval.prompts={tmp_path / 'manifest.jsonl'}"])
    assert [p["id"] for p in load_prompts(cfg, 4, 1.0, SR)] == ["c1"]
    (tmp_path / "captions.txt").write_text("calm piano\nfast rock\n\ncalm piano\n")
    cfg = resolve("tiny", overrides=[f"eval.prompts={tmp_path / 'captions.txt'}"])
    notes = []
    prompts = load_prompts(cfg, 3, 1.0, SR, notes)
    assert [p["caption"] for p in prompts] == ["calm piano", "fast rock"] and "holds 2 distinct captions" in notes[0]
    assert all(p["reference"] is None and p["labels"] is None for p in prompts)


def test_labels_are_cropped_to_the_evaluated_span():
    labels = {"chords": [["C", 0.0, 0.8], ["G", 0.8, 1.6], ["F", 1.6, 2.0]],
              "melody": [[60, 0.5, 1.2], [62, 1.2, 1.4]], "beats": [0.0, 0.5, 1.0, 1.5],
              "downbeats": [0.0, 1.0, 2.0], "tempo": 120.0}
    out = crop_labels(labels, 1.0)
    assert out["chords"] == [["C", 0.0, 0.8], ["G", 0.8, 1.0]]
    assert out["melody"] == [[60, 0.5, 1.0]] and out["beats"] == [0.0, 0.5] and out["downbeats"] == [0.0]
    assert out["tempo"] == 120.0 and labels["beats"] == [0.0, 0.5, 1.0, 1.5]  # the input is not changed
    assert crop_labels(None, 1.0) is None


# ----------------------------------------------------------------------------------------------- variants
def _gen(paradigm, **model):
    cfg = resolve("tiny", overrides=[f"model.paradigm={paradigm}"] + [f"model.{k}={v}" for k, v in model.items()])
    return SimpleNamespace(cfg=cfg, paradigm=paradigm)


def test_variants_of_each_kind_of_model():
    cfg = resolve("tiny", overrides=["sample.solver=euler", "sample.steps=8", "eval.euler_steps=[4, 8]"])
    fm = build_variants(_gen("fm"), cfg)
    assert list(fm) == ["", "euler4", "euler8", "inpaint_zs"]
    assert fm["euler4"] == {"sample": {"solver": "euler", "steps": 4}}
    assert fm["euler8"] == {"alias": ""}  # the default sampling already is Euler with 8 steps
    assert fm["inpaint_zs"]["inpaint"] == "zero_shot"
    assert list(build_variants(_gen("ar"), cfg)) == [""]
    ctl = build_variants(_gen("ar", controls="[chords, melody]"), cfg)
    assert list(ctl) == ["", "single_chords", "single_melody"] and ctl["single_melody"]["controls"] == ["melody"]
    assert build_variants(_gen("fm", inpainting="supervised"), cfg) == {"inpaint": {"sample": {}, "inpaint": "supervised"}}


def test_few_step_variants_match_each_euler_rows_nfe():
    cfg = resolve("tiny", overrides=["eval.euler_steps=[4, 7, 16]", "eval.equal_nfe_solvers=[midpoint, heun]",
                                     "eval.shifted_euler=3.0"])
    fm = build_variants(_gen("fm"), cfg)
    assert fm["nfe4_midpoint"] == {"sample": {"solver": "midpoint", "steps": 2}}
    assert fm["nfe16_heun"] == {"sample": {"solver": "heun", "steps": 8}}
    assert fm["nfe7_shift"] == {"sample": {"solver": "euler", "steps": 7, "time_shift": 3.0}}
    assert "nfe7_midpoint" not in fm  # an odd count has no two-evaluation counterpart
    only = resolve("tiny", overrides=["eval.euler_steps=[4, 16]", "eval.equal_nfe_solvers=[heun]", "eval.few_step_nfe=[4]"])
    assert [v for v in build_variants(_gen("fm"), only) if v.startswith("nfe")] == ["nfe4_heun"]
    assert not any(v.startswith("nfe") for v in build_variants(_gen("fm", controls="[chords]"), cfg))
    assert not any(v.startswith("nfe") for v in build_variants(_gen("fm"), cfg, single_controls=False))
    assert build_variants(_gen("ar", inpainting="fim"), cfg) == {"inpaint": {"sample": {}, "inpaint": "fim"}}


# --------------------------------------------------------------------------------------------- the config
@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, two_clip_corpus, tiny_model):
    cfg, _ = tiny_model(tmp_path_factory.mktemp("fm"), "fm", two_clip_corpus)
    return cfg


def test_the_runs_own_config_then_what_the_user_sets(run_cfg, tmp_path):
    same = evaluation_config(run_cfg, user_layer())
    assert same == run_cfg  # no preset imposed: the run's seconds, Euler steps, cfg ...
    assert (same.sample.seconds, same.eval.euler_steps, same.sample.cfg) == (1.0, [2], 3.0)
    cfg = evaluation_config(run_cfg, user_layer(overrides=["sample.cfg=1.5", "sample.solver=dopri5"]))
    assert (cfg.sample.cfg, cfg.sample.solver, cfg.sample.seconds) == (1.5, "dopri5", 1.0)
    tiny = evaluation_config(run_cfg, user_layer(preset="tiny"))  # a preset brings its sampling and evaluation
    assert (tiny.sample.seconds, tiny.eval.euler_steps, tiny.sample.steps) == (4.0, [4, 8, 16], 16)
    assert tiny.model == run_cfg.model and tiny.data == run_cfg.data
    (tmp_path / "eval.yaml").write_text("sample: {solver: heun, cfg: 2.0}\nmodel: {layers: 9}\n")
    layered = evaluation_config(run_cfg, user_layer(preset="tiny", config_file=tmp_path / "eval.yaml",
                                                    overrides=["sample.cfg=1.5"]))
    assert (layered.sample.solver, layered.sample.cfg, layered.sample.seconds) == ("heun", 1.5, 4.0)
    assert layered.model.layers == run_cfg.model.layers  # the model is the run's
    with pytest.raises(ConfigError, match=r"--set model.layers: .*only sample\.\*, eval\.\*, tracking\.\*"):
        user_layer(overrides=["model.layers=4"])
    with pytest.raises(ConfigError, match="sample.cfg"):
        evaluation_config(run_cfg, user_layer(overrides=["sample.cfg=-1"]))
    with pytest.raises(ConfigError, match="unknown preset"):
        user_layer(preset="huge")


def test_every_variant_samples_with_the_evaluations_config(run_cfg, tmp_path, two_clip_corpus, tiny_model):
    from arfm.generate import Generator

    _, folder = tiny_model(tmp_path, "fm", two_clip_corpus)
    gen = Generator.load(folder, device="cpu")
    seen = []
    real = gen.generate

    def spy(reqs, sample=None, **kw):
        seen.append(dict(sample))
        return real(reqs, sample=sample, **kw)

    gen.generate = spy
    cfg = evaluation_config(run_cfg, user_layer(overrides=["sample.cfg=1.5"]))
    prompts = load_prompts(cfg, 2, 1.0, gen.sample_rate)
    variants = build_variants(gen, cfg)
    outs = {name: generate_variant(gen, prompts, spec, cfg, 1.0) for name, spec in variants.items()
            if "alias" not in spec}
    assert [s["cfg"] for s in seen] == [1.5] * len(outs)  # never the model's training-time 3.0
    assert seen[0]["steps"] == 2 and seen[list(outs).index("inpaint_zs")]["steps"] == 2
    assert all(i["cfg"] == 1.5 for out in outs.values() for i in out["info"])
    assert [i["seed"] for i in outs[""]["info"]] == [cfg.train.seed, cfg.train.seed + 1]


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_arfm_evaluate_logs_what_it_used_on_the_run(tmp_path, two_clip_corpus, tiny_model, ray_two_cpus,
                                                   monkeypatch):
    """`arfm evaluate --run ID --set sample.cfg=1.5` on a run logged to MLflow: the run's own settings plus
    cfg=1.5 are tags of the run, every metric has its method tag, and the run is tagged evaluated."""
    from typer.testing import CliRunner

    from arfm import tracking
    from arfm.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ARFM_HOME", str(tmp_path / "home"))
    cfg, folder = tiny_model(tmp_path, "ar", two_clip_corpus, [f"tracking.uri={uri}", "tracking.experiment=t"])
    _, run_id = tracking.start_run(cfg, "train", "ar")
    tracking.log_model_dir(uri, run_id, folder)
    tracking.finish_run(uri, run_id)
    client = tracking.client(uri)
    assert "evaluated" not in client.get_run(run_id).data.tags

    res = CliRunner().invoke(app, ["evaluate", "--run", run_id, "--n", "4", "--set", "sample.cfg=1.5",
                                   "--set", f"tracking.uri={uri}"])
    assert res.exit_code == 0, res.output
    assert "4 samples asked" in res.output and "evaluated n = 2" in res.output
    run = client.get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["evaluated"] == "true"
    assert tags["eval/sample.cfg"] == "1.5" and tags["eval/sample.seconds"] == "1.0"  # the run's own seconds
    assert tags["eval/eval.euler_steps"] == "[2]" and run.data.params["sample.cfg"] == "3.0"
    assert tags["eval/chord_iou.method"].startswith("chordino vs labels, tetrads; 95% t interval")
    assert tags["eval/beat_f1.method"].startswith("madmom vs labels; 95% t interval")
    # no train clips in this corpus: FAD's real set is the prompts' references, and the method says so
    assert tags["eval/fad.method"].startswith("mel-offline vs the prompts' reference clips; 95% basic bootstrap "
                                             "over clips, both sets resampled")
    assert tags["eval/clap.method"].startswith("laion-clap; skipped: no CLAP checkpoint")
    assert "4 samples asked" in tags["eval/notes"]
    assert {"eval/fad", "eval/chord_iou", "eval/beat_f1", "eval/melody_sim"} <= set(metrics)
    path = client.download_artifacts(run_id, "eval/per_sample.json", str(tmp_path))
    doc = json.loads(open(path).read())
    assert doc["n"] == 2 and doc["ids"] == ["c0", "c1"] and len(doc["per_sample"]["chord_iou"]) == 2
    assert np.isclose(metrics["eval/chord_iou"], np.mean([v for v in doc["per_sample"]["chord_iou"] if v is not None]))
    config = client.download_artifacts(run_id, "eval/config.yaml", str(tmp_path))
    assert "cfg: 1.5" in open(config).read()
    # the report of that evaluation: intervals as computed, every adherence cell naming estimator and reference
    from arfm.evaluate.report import write_report

    md = write_report("t", out=tmp_path / "report", uri=uri, log=False).markdown
    row = next(line for line in md.splitlines() if line.startswith("| 50 ") and "| AR " in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    fad = next(c for c in cells if "mel-offline" in c)
    assert "±" not in fad and "[" in fad and fad.endswith(
        "(mel-offline vs the prompts' reference clips; basic bootstrap, both sets resampled)")
    assert any(c.endswith("(chordino vs labels, tetrads)") for c in cells)
    assert any(c.endswith("(madmom vs labels)") for c in cells)
    assert any(c.endswith("(chroma-argmax (MusicGen) vs audio)") for c in cells)  # as the paper: audio
    assert "4 samples asked" in md.split("## Evaluation notes")[1]
