"""The generation API on tiny untrained models: shapes, determinism, batching, controls, inpainting, errors."""

import numpy as np
import pytest
import torch

from arfm.config import resolve
from arfm.generate import GenerationError, GenerationRequest, Generator
from arfm.modeling import load_model_dir, save_untrained_model


def _saved(tmp_path, paradigm, extra=()):
    cfg = resolve("tiny", overrides=[f"model.paradigm={paradigm}", "text.encoder=tiny-t5", "data.segment_seconds=1.0",
                                     "sample.steps=4", *extra])
    return (cfg, *save_untrained_model(cfg, tmp_path, controls=["chords", "melody", "drums"]))


@pytest.mark.parametrize("paradigm", ["ar", "fm"])
def test_generate_shapes_and_seed_determinism(tmp_path, paradigm):
    cfg, path, _ = _saved(tmp_path, paradigm)
    gen = Generator.load(path, device="cpu")
    reqs = [GenerationRequest("warm jazz piano", seconds=0.5, seed=3), GenerationRequest("fast rock", seconds=1.0)]
    out = gen.generate(reqs)
    assert [len(r.audio) for r in out] == [16000, 32000]
    assert all(r.audio.dtype == np.float32 and np.isfinite(r.audio).all() for r in out)
    assert out[0].info["paradigm"] == paradigm
    again = gen.generate([GenerationRequest("warm jazz piano", seconds=0.5, seed=3)])
    np.testing.assert_array_equal(out[0].audio, again[0].audio)
    if paradigm == "fm":
        assert out[0].info["nfe"] == 4


def test_saved_model_round_trip_is_exact(tmp_path):
    """The loaded weights are those of the model that was saved: same names, same values."""
    _, path, model = _saved(tmp_path, "fm")
    original = model.state_dict()
    _, _, loaded = load_model_dir(path)
    got = loaded.state_dict()
    assert list(got) == list(original)
    for key, value in original.items():
        assert torch.equal(got[key], value), key


CAPTIONS = ["fast rock with distorted guitars and a loud drum kit, 140 bpm", "x", "calm ambient pad",
            "lofi hip hop beat with vinyl crackle", "orchestral", "techno", "folk guitar and voice"]


@pytest.mark.parametrize("paradigm", ["ar", "fm"])
def test_a_request_gives_the_same_audio_alone_and_in_any_batch(tmp_path, paradigm):
    """Seed 7 alone, and at several places of a batch of 8 whose other requests have other seeds and
    captions of other lengths: bit-identical audio (each request has its own generator)."""
    _, path, _ = _saved(tmp_path, paradigm)
    gen = Generator.load(path, device="cpu")
    target = GenerationRequest("warm jazz piano, 90 bpm", seconds=1.0, seed=7)
    alone = gen.generate([target])[0]
    assert alone.info["seed"] == 7
    for pos in (0, 3, 7):
        others = [GenerationRequest(c, seconds=1.0, seed=100 + i) for i, c in enumerate(CAPTIONS)]
        batch = others[:pos] + [target] + others[pos:]
        out = gen.generate(batch, batch_size=8)
        assert out[pos].info["batch"] == 8
        np.testing.assert_array_equal(out[pos].audio, alone.audio, err_msg=f"position {pos}")
        assert not np.array_equal(out[(pos + 1) % 8].audio, alone.audio)  # the others are other samples


def test_requests_without_a_seed_report_the_one_drawn(tmp_path):
    _, path, _ = _saved(tmp_path, "fm")
    gen = Generator.load(path, device="cpu")
    first = gen.generate([GenerationRequest("calm", seconds=0.5)])[0]
    again = gen.generate([GenerationRequest("calm", seconds=0.5, seed=first.info["seed"])])[0]
    np.testing.assert_array_equal(first.audio, again.audio)


def test_bad_requests_name_the_field(tmp_path):
    _, path, _ = _saved(tmp_path, "ar", ["model.controls=[chords]"])
    gen = Generator.load(path, device="cpu")
    with pytest.raises(GenerationError, match="caption"):
        gen.generate([GenerationRequest("", seconds=0.5)])
    with pytest.raises(GenerationError, match="seconds"):
        gen.generate([GenerationRequest("x", seconds=-1)])
    with pytest.raises(GenerationError, match="controls.chords"):
        gen.generate([GenerationRequest("x", seconds=0.5, controls={"chords": [999]})])
    with pytest.raises(GenerationError, match="melody"):
        gen.generate([GenerationRequest("x", seconds=0.5, controls={"melody": [1]})])
    ok = gen.generate([GenerationRequest("x", seconds=0.5, controls={"chords": [0, 1, 2]})])
    assert len(ok[0].audio) == 16000


def test_fm_zero_shot_inpainting_request(tmp_path):
    _, path, _ = _saved(tmp_path, "fm")
    gen = Generator.load(path, device="cpu")
    ref = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    out = gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.2, 0.6), seed=0)])
    assert out[0].info["inpaint_mode"] == "zero_shot" and len(out[0].audio) == 32000
    with pytest.raises(GenerationError, match="inpaint_span"):
        gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.8, 1.6))])
    with pytest.raises(GenerationError, match="inpaint_mode"):
        gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.2, 0.6),
                                        inpaint_mode="supervised")])


def test_fm_with_an_adaptive_solver_integrates_each_request_on_its_own(tmp_path):
    """dopri5 picks its step size from the error of everything it integrates together: per request, the audio
    and the NFE of a request do not depend on its batch."""
    _, path, _ = _saved(tmp_path, "fm")
    gen = Generator.load(path, device="cpu")
    sample = {"solver": "dopri5", "rtol": 1e-3, "atol": 1e-3}
    target = GenerationRequest("warm jazz piano", seconds=0.5, seed=7)
    alone = gen.generate([target], sample=sample)[0]
    batch = gen.generate([GenerationRequest(c, seconds=0.5, seed=i) for i, c in enumerate(CAPTIONS[:2])] + [target],
                         sample=sample, batch_size=8)
    np.testing.assert_array_equal(batch[2].audio, alone.audio)
    assert batch[2].info["nfe"] == alone.info["nfe"] and batch[2].info["batch"] == 1


def test_registered_models_resolve_in_the_given_store_without_changing_the_process(tmp_path, monkeypatch):
    import mlflow

    from arfm import tracking
    from arfm.generate import resolve_source

    monkeypatch.setenv("ARFM_HOME", str(tmp_path / "home"))
    cfg, path, _ = _saved(tmp_path, "fm")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": uri, "experiment": "g"})})
    _, run_id = tracking.start_run(cfg, "train", "fm")
    tracking.log_model_dir(uri, run_id, path)
    version = tracking.register_model(uri, run_id, "arfm-g")
    before = mlflow.get_registry_uri()
    folder = resolve_source(f"models:/arfm-g/{version}", tracking_uri=uri)
    assert (folder / "weights.pt").is_file() and (resolve_source(run_id, tracking_uri=uri) / "config.yaml").is_file()
    assert mlflow.get_registry_uri() == before  # later clients still use their own store's registry
    assert (resolve_source("models:/arfm-g/latest", tracking_uri=uri) / "weights.pt").is_file()
    with pytest.raises(GenerationError, match="no registered model named 'nope'"):
        resolve_source("models:/nope/1", tracking_uri=uri)
    with pytest.raises(GenerationError, match="has no version 7"):
        resolve_source("models:/arfm-g/7", tracking_uri=uri)


def test_jasco_cfg_form_reaches_the_model(tmp_path):
    """sample.cfg_form=jasco with w_all = w_c, w_txt = w_text - w_c gives the nested form's audio (one shared
    control weight), and other JASCO weights give other audio."""
    _, path, _ = _saved(tmp_path, "fm", ["model.controls=[chords, melody]"])
    gen = Generator.load(path, device="cpu")
    req = [GenerationRequest("warm jazz piano", seconds=0.5, seed=1,
                             controls={"chords": [3] * 25, "melody": [5] * 25})]
    nested = gen.generate(req, sample={"cfg": 3.0, "control_cfg": {"chords": 2.0, "melody": 2.0}})[0]
    jasco = gen.generate(req, sample={"cfg_form": "jasco", "cfg": 1.0, "cfg_all": 2.0})[0]
    other = gen.generate(req, sample={"cfg_form": "jasco", "cfg": 0.0, "cfg_all": 3.0})[0]
    assert jasco.info["cfg_form"] == "jasco" and jasco.info["cfg_all"] == 2.0
    np.testing.assert_allclose(jasco.audio, nested.audio, atol=1e-5)
    assert not np.allclose(other.audio, nested.audio, atol=1e-5)
