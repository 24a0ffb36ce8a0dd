"""The codec layer (arfm.latents): paper configurations, token/latent shapes, E.2 normalization, save/load,
the pretrained (hub) format, and a round trip through a tiny codec trained in this test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from arfm import latents
from arfm.config import resolve
from arfm.latents import Codec, CodecUnavailableError, compute_normalization

SR = 32000


@pytest.mark.parametrize("frame_rate,strides,frames", [(25, [8, 8, 5, 4], 250), (50, [8, 5, 4, 4], 500),
                                                       (100, [8, 5, 4, 2], 1000)])
def test_paper_configurations_and_shapes(frame_rate, strides, frames):
    """Appendix E.3 at 32 kHz: strides, channels 64..512, GELU, D=128, 4 x 2048 codebooks; T = 10 s x rate."""
    cfg = resolve("paper", overrides=[f"codec.frame_rate={frame_rate}"]).codec
    paper = Codec.from_config(cfg, SR)
    info = paper.info()
    assert info["strides"] == strides and paper.hop_length == SR // frame_rate
    assert info["channels"][:4] == [64, 128, 256, 512] and info["activation"] == "gelu"
    assert (paper.latent_dim, paper.n_codebooks, paper.codebook_size) == (128, 4, 2048)
    assert paper.frame_rate == frame_rate and paper.n_frames(10.0) == frames
    assert not any(isinstance(m, torch.nn.ELU) for m in paper.model.modules())
    x = torch.randn(1, 1, SR // 5) * 0.1  # 0.2 s through the full-size model
    assert paper.encode_latent(x).shape == (1, frame_rate // 5, 128)
    # 10 s through a narrow model with the same strides, latent size and codebooks (fast on CPU)
    narrow = Codec.from_config(cfg.model_copy(update={"base_channels": 4, "lstm_layers": 0}), SR)
    audio = torch.randn(2, 1, 10 * SR) * 0.1
    z = narrow.encode_latent(audio)
    codes = narrow.encode_tokens(audio)
    assert z.shape == (2, frames, 128) and z.dtype == torch.float32
    assert codes.shape == (2, 4, frames) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048
    assert torch.equal(codes, narrow.quantize(z))
    assert narrow.dequantize(codes).shape == (2, frames, 128)
    assert narrow.decode_latent(z).shape == (2, 1, 10 * SR)
    assert narrow.decode_tokens(codes).shape == (2, 1, 10 * SR)


def _tiny(**update) -> Codec:
    cfg = resolve("tiny").codec.model_copy(update=update)
    return Codec.from_config(cfg, SR)


def test_normalization_matches_appendix_e2_and_normalizes():
    codec = _tiny()
    rng = np.random.default_rng(0)
    segments = [0.2 * rng.standard_normal(SR // 2).astype(np.float32) + 0.1 for _ in range(10)]
    mean, mean_std = compute_normalization(codec, iter(segments), n_segments=10, batch_size=4)
    M = codec.encode_latent(torch.from_numpy(np.stack(segments))[:, None]).double()  # [N, T, D]
    assert math.isclose(mean, M.mean().item(), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(mean_std, M.std(dim=1).mean().item(), rel_tol=1e-6)
    Z = codec.normalize(M)
    assert abs(Z.mean().item()) < 1e-6 and abs(Z.std(dim=1).mean().item() - 1.0) < 1e-6
    assert torch.allclose(codec.unnormalize(Z), M, atol=1e-9)
    assert codec.has_normalization and codec.norm_info["n_segments"] == 10
    with pytest.raises(ValueError, match="asked for 20 segments"):
        compute_normalization(_tiny(), iter(segments), n_segments=20)


def test_save_load_gives_identical_outputs(tmp_path):
    codec = _tiny(activation="gelu")
    codec.set_normalization(0.25, 1.5, n_segments=3)
    codec.save(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / latents.CODEC_META).read_text())
    assert meta["frame_rate"] == 50 and meta["identity"] == codec.identity
    loaded = Codec.load(tmp_path / "c")
    x = torch.randn(2, 1, SR) * 0.2
    assert torch.equal(codec.encode_latent(x), loaded.encode_latent(x))
    assert torch.equal(codec.encode_tokens(x), loaded.encode_tokens(x))
    assert torch.equal(codec.decode_tokens(codec.encode_tokens(x)), loaded.decode_tokens(loaded.encode_tokens(x)))
    assert (loaded.mean, loaded.mean_std, loaded.identity) == (0.25, 1.5, codec.identity)
    assert isinstance(loaded.model.encoder.layers[2], torch.nn.GELU)


def test_pretrained_hub_format_loads_through_the_same_path(tmp_path):
    """A plain transformers EncodecModel saved with save_pretrained (the layout of facebook/encodec_32khz:
    ELU, LSTM, no arfm_codec.json) loads via Codec.load and encodes/decodes exactly like transformers itself."""
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    hub_cfg = EncodecConfig(sampling_rate=SR, upsampling_ratios=[8, 5, 4, 4], num_filters=4, hidden_size=16,
                            codebook_size=64, target_bandwidths=[4 * 50 * 6 / 1000], num_lstm_layers=1,
                            use_causal_conv=False, pad_mode="constant", use_conv_shortcut=False)
    hub = EncodecModel(hub_cfg).eval()
    for layer in hub.quantizer.layers:
        layer.codebook.embed.copy_(torch.randn_like(layer.codebook.embed))
    hub.save_pretrained(tmp_path / "encodec_hub")
    assert not (tmp_path / "encodec_hub" / latents.CODEC_META).exists()

    codec = Codec.load(tmp_path / "encodec_hub")
    assert (codec.frame_rate, codec.n_codebooks, codec.codebook_size, codec.latent_dim) == (50, 4, 64, 16)
    assert not codec.has_normalization and codec.info()["activation"] == "elu"
    x = torch.randn(2, 1, SR) * 0.2
    with torch.no_grad():
        enc = hub.encode(x)
        ref_codes = enc.audio_codes[0]  # [B, K, T]
        ref_audio = hub.decode(enc.audio_codes, enc.audio_scales).audio_values
    assert torch.equal(codec.encode_tokens(x), ref_codes)
    assert torch.allclose(codec.decode_tokens(ref_codes), ref_audio, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(codec.encode_latent(x), hub.encoder(x).transpose(1, 2))
    # a locally trained codec and this one went through the same loader: both are ArfmEncodecModel
    assert type(codec.model) is latents.ArfmEncodecModel


def test_unreachable_codecs_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(latents, "_hub_offline", lambda *a, **k: True)
    with pytest.raises(CodecUnavailableError, match="huggingface-cli download arfm-tests/no-such-codec"):
        Codec.load("arfm-tests/no-such-codec")
    with pytest.raises(CodecUnavailableError, match="arfm codec train"):
        Codec.load(str(tmp_path / "missing" / "dir"))
    with pytest.raises(CodecUnavailableError, match="no config.json"):
        Codec.load(tmp_path)


# ------------------------------------------------------------------------------------ trained round trip
def _tones(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """1-2 sustained low harmonic tones (f0 55-220 Hz, 8 harmonics at 1/h^1.2, slow decay) per clip."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n)
    cut = rng.uniform(0.3, seconds - 0.3) if rng.random() < 0.5 else seconds
    for start, end in ((0.0, cut), (cut, seconds)):
        if end <= start:
            continue
        for _ in range(int(rng.integers(1, 3))):
            f0 = 55.0 * 2 ** (int(rng.integers(0, 24)) / 12)
            m = (t >= start) & (t < end)
            tt = t[m] - start
            env = np.minimum(1.0, tt / 0.01) * np.exp(-tt * rng.uniform(0, 0.5))
            out[m] += env * sum(h**-1.2 * np.sin(2 * np.pi * f0 * h * tt + rng.uniform(0, 2 * np.pi))
                                for h in range(1, 9))
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


TRAIN_STEPS = 300
# Floors for the codec trained below (300 steps, 1 thread, ~40 s). Measured over 4 (train seed, data seed)
# pairs: SI-SNR 5.8-8.5 dB (latent) and 3.9-6.6 dB (tokens), log-MSD 0.57-0.62; an untrained codec gives about
# -40 dB and log-MSD > 1.2. The floors show that the waveform, phase included, is reconstructed, with margin for
# run-to-run variation.
SI_SNR_FLOOR_LATENT, SI_SNR_FLOOR_TOKENS, LOG_MSD_CEILING = 3.0, 2.0, 0.75


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from arfm.train.local import train_local
    from arfm.train.tasks.codec import CodecTask

    root = tmp_path_factory.mktemp("tones")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        path = f"audio/t{i}.wav"
        sf.write(root / path, _tones(rng, 2.0), SR, subtype="PCM_16")
        rows.append({"id": f"t{i}", "path": path, "caption": "tones", "split": "valid" if i >= 14 else "train",
                     "seconds": 2.0, "sample_rate": SR, "labels": None})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = resolve("tiny", overrides=[f"data.dataset={root}", "data.segment_seconds=2.0", "codec.norm_segments=12",
                                     f"codec.path={root / 'codec'}"])
    task = CodecTask("codec")
    history: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible numerics on any machine, and no oversubscription on a busy one
    try:
        model = train_local(cfg, task, steps=TRAIN_STEPS, log=None, history=history)
        metrics = task.finalize(task.job_config(cfg), model, root / "artifact")
    finally:
        torch.set_num_threads(threads)
    return cfg, root, metrics, history


def test_trained_tiny_codec_round_trip_beats_floor(trained):
    from arfm.evaluate.reconstruction import evaluate_codec
    from arfm.train.tasks.codec import random_crops

    cfg, root, metrics, history = trained
    assert history[-1]["step"] == TRAIN_STEPS and history[-1]["stopped"] == "completed"
    codec = Codec.load(cfg.codec.path)  # finalize wrote codec.path as well as the artifact dir
    assert Codec.load(root / "artifact").identity == codec.identity
    report = evaluate_codec(codec, str(root), "valid")
    s = report["summary"]
    print(f"trained tiny codec after {TRAIN_STEPS} steps: {s}")
    assert s["si_snr_latent"] > SI_SNR_FLOOR_LATENT, s
    assert s["si_snr_tokens"] > SI_SNR_FLOOR_TOKENS, s
    assert s["log_msd_latent"] < LOG_MSD_CEILING and s["log_msd_tokens"] < LOG_MSD_CEILING, s
    assert math.isclose(metrics["recon_si_snr_latent"], s["si_snr_latent"], rel_tol=1e-4)
    untrained = evaluate_codec(_tiny(), str(root), "valid")["summary"]
    assert s["si_snr_latent"] > untrained["si_snr_latent"] + 10 and s["log_msd_latent"] < untrained["log_msd_latent"]

    # E.2 statistics stored with the codec normalize its computing set to mean 0, mean-std 1
    assert codec.has_normalization and codec.norm_info["n_segments"] == 12
    crops = list(random_crops(cfg, cfg.data.segment_seconds, 12, seed=cfg.data.seed + 1))
    Z = codec.normalize(codec.encode_latent(torch.from_numpy(np.stack(crops))[:, None]).double())
    assert abs(Z.mean().item()) < 1e-4 and abs(Z.std(dim=1).mean().item() - 1.0) < 1e-4
