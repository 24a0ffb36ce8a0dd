"""The generation API on tiny untrained models: shapes, determinism, batching, controls, inpainting, errors."""

import numpy as np
import pytest
import torch

from arfm.config import resolve
from arfm.generate import GenerationError, GenerationRequest, Generator
from arfm.latents import Codec
from arfm.modeling import build_generative, load_model_dir, save_model_dir
from arfm.text import build_text_encoder


def _saved(tmp_path, paradigm, extra=()):
    cfg = resolve("tiny", overrides=[f"model.paradigm={paradigm}", "text.encoder=tiny-t5", "data.segment_seconds=1.0",
                                     "sample.steps=4", *extra])
    codec = Codec.from_config(cfg.codec, cfg.data.sample_rate)
    codec.set_normalization(0.0, 1.0)
    codec.save(tmp_path / "codec")
    text = build_text_encoder(cfg.text)
    meta = {"codec": codec.identity, "codec_path": str(tmp_path / "codec"), "frame_rate": codec.frame_rate,
            "n_codebooks": codec.n_codebooks, "codebook_size": codec.codebook_size, "latent_dim": codec.latent_dim,
            "text_encoder": text.identity, "text_dim": text.dim, "controls": ["chords", "melody", "drums"]}
    torch.manual_seed(0)
    model = build_generative(cfg, meta)
    save_model_dir(cfg, meta, model, tmp_path / "model")
    return cfg, tmp_path / "model"


@pytest.mark.parametrize("paradigm", ["ar", "fm"])
def test_generate_shapes_and_seed_determinism(tmp_path, paradigm):
    cfg, path = _saved(tmp_path, paradigm)
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
    cfg, path = _saved(tmp_path, "fm")
    _, _, a = load_model_dir(path)
    _, _, b = load_model_dir(path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_bad_requests_name_the_field(tmp_path):
    _, path = _saved(tmp_path, "ar", ["model.controls=[chords]"])
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
    _, path = _saved(tmp_path, "fm")
    gen = Generator.load(path, device="cpu")
    ref = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    out = gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.2, 0.6), seed=0)])
    assert out[0].info["inpaint_mode"] == "zero_shot" and len(out[0].audio) == 32000
    with pytest.raises(GenerationError, match="inpaint_span"):
        gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.8, 1.6))])
    with pytest.raises(GenerationError, match="inpaint_mode"):
        gen.generate([GenerationRequest("x", seconds=1.0, inpaint_audio=ref, inpaint_span=(0.2, 0.6),
                                        inpaint_mode="supervised")])
