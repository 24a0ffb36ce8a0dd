"""train.init_from: a tiny AR starts from a saved MusicGen (transformers format) or an arfm saved model."""

from __future__ import annotations

import json

import pytest
import torch

from arfm.config import resolve
from arfm.finetune import InitFromError
from arfm.modeling import save_model_dir
from arfm.train.engine import INIT_REPORT, initial_model
from arfm.train.tasks.generative import GenerativeTask

K, CARD, TEXT_DIM = 2, 32, 16
META = {"n_codebooks": K, "codebook_size": CARD, "latent_dim": 8, "text_dim": TEXT_DIM, "controls": []}


def _task(cfg) -> GenerativeTask:
    task = GenerativeTask(cfg.model.paradigm)
    task._meta = dict(META)  # what the shards' metadata would say
    return task


def _cfg(*overrides):
    return resolve("tiny", overrides=["model.paradigm=ar", *overrides])  # 2 layers, dim 64, 4 heads, ffn 128


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory):
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                              T5Config)

    torch.manual_seed(7)
    t5 = T5Config(vocab_size=64, d_model=TEXT_DIM, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    codec = EncodecConfig(codebook_size=CARD, hidden_size=8, num_filters=4, num_residual_layers=1,
                          upsampling_ratios=[4, 4], codebook_dim=8, num_lstm_layers=1, target_bandwidths=[1.5],
                          sampling_rate=16000)
    dec = MusicgenDecoderConfig(vocab_size=CARD, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                ffn_dim=128, num_codebooks=K, max_position_embeddings=64)
    model = MusicgenForConditionalGeneration(MusicgenConfig.from_sub_models_config(t5, codec, dec))
    path = tmp_path_factory.mktemp("musicgen") / "tiny-musicgen"
    model.save_pretrained(path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_fine_tune_from_a_saved_musicgen_loads_its_weights(musicgen_dir, tmp_path):
    path, src = musicgen_dir
    cfg = _cfg(f"train.init_from={path}", "model.inpainting=fim")
    lines: list[str] = []
    model = initial_model(_task(cfg), cfg, lines.append, tmp_path)
    sd = model.state_dict()
    layer = "decoder.model.decoder.layers.1."
    for k in range(K):
        assert torch.equal(sd[f"heads.{k}.weight"], src[f"decoder.lm_heads.{k}.weight"])
        # codes and the start token (MusicGen's pad row = arfm's empty) loaded; the 3 FIM rows are new
        assert torch.equal(sd[f"embed.{k}.weight"][: CARD + 1], src[f"decoder.model.decoder.embed_tokens.{k}.weight"])
    q, k_, v = (src[f"{layer}self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(sd["backbone.blocks.1.self_attn.qkv.weight"], torch.cat([q, k_, v]))
    assert torch.equal(sd["backbone.blocks.1.cross_attn.kv.weight"],
                       torch.cat([src[f"{layer}encoder_attn.k_proj.weight"], src[f"{layer}encoder_attn.v_proj.weight"]]))
    assert torch.equal(sd["backbone.blocks.1.cross_attn.q.weight"], src[f"{layer}encoder_attn.q_proj.weight"])
    assert torch.equal(sd["backbone.blocks.1.ffn.3.weight"], src[f"{layer}fc2.weight"])
    assert torch.equal(sd["backbone.blocks.1.norm_ffn.bias"], src[f"{layer}final_layer_norm.bias"])
    assert torch.equal(sd["backbone.norm.weight"], src["decoder.model.decoder.layer_norm.weight"])
    assert torch.equal(sd["text.proj.weight"], src["enc_to_dec_proj.weight"])
    report = json.loads((tmp_path / INIT_REPORT).read_text())
    assert report["format"] == "musicgen" and set(report["partial"]) == {"embed.0.weight", "embed.1.weight"}
    assert "text.null" in report["new"] and "backbone.blocks.0.ffn.0.bias" in report["new"]
    assert any(n.startswith("text_encoder.") for n in report["dropped"])
    assert any(n.startswith("audio_encoder.") for n in report["dropped"])
    assert not report["mismatched"] and report["counts"]["loaded"] == len(report["loaded"]) > 20
    assert lines and "text.null" in lines[0] and "dropped" in lines[0]


def test_fine_tune_fim_from_an_arfm_saved_model(tmp_path):
    base = _cfg()
    torch.manual_seed(3)
    source = _task(base).build_model(base)
    with torch.no_grad():  # as after training: no tensor left at its initial value (zero biases, unit norms)
        for p in source.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model_dir(base, META, source, tmp_path / "run" / "model")
    cfg = _cfg(f"train.init_from={tmp_path / 'run'}", "model.inpainting=fim", "train.seed=11")
    model = initial_model(_task(cfg), cfg, None, tmp_path)
    fresh = _task(cfg).build_model(cfg)
    src, sd = source.state_dict(), model.state_dict()
    for name, value in src.items():
        got = sd[name][: value.shape[0]] if name.startswith("embed.") else sd[name]
        assert torch.equal(got, value), name
        assert not torch.equal(fresh.state_dict()[name][: value.shape[0]], value), name  # a real change
    report = json.loads((tmp_path / INIT_REPORT).read_text())
    assert report["format"] == "arfm" and not report["new"] and not report["dropped"]
    assert report["partial"] == {f"embed.{k}.weight": f"rows 0-{CARD} of {CARD + 4} loaded (source has {CARD + 1})"
                                 for k in range(K)}


def test_bad_sources_name_the_field(tmp_path):
    cfg = _cfg(f"train.init_from={tmp_path}")
    with pytest.raises(InitFromError, match=r"train\.init_from=.*neither an arfm saved model"):
        initial_model(_task(cfg), cfg)
    other = _cfg("model.dim=32", "model.ffn=64", f"train.init_from={tmp_path}")
    (tmp_path / "model").mkdir()
    save_model_dir(_cfg(), META, _task(_cfg()).build_model(_cfg()), tmp_path / "model")
    with pytest.raises(InitFromError, match="no parameter of the model matches"):
        initial_model(_task(other), other)
