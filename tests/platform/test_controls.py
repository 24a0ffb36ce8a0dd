"""Temporal controls (appendix C): labels -> frames, drums blur + quantize, audio estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arfm import controls as C
from arfm.config import resolve
from arfm.latents import Codec
from arfm.vocab import MELODY_NONE, N_CHORDS, chord_index

SR = 16000


def _tone(midi: float, seconds: float, harmonics: int = 4) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(0.6**k * np.sin(2 * np.pi * (k + 1) * f * t) for k in range(harmonics))


def test_controls_from_labels_match_hand_computed_frames():
    labels = {"chords": [["C", 0.0, 0.5], ["Am7", 0.5, 1.5]], "melody": [[60, 0.2, 0.6], [100, 1.0, 1.2]]}
    out = C.controls_from_labels(labels, frame_rate=10, n_frames=20)
    c, am7, n = chord_index("C"), chord_index("Am7"), N_CHORDS - 1
    assert (c, am7, n) == (0, 9 * 16 + 7, 192)  # A is root 9, m7 the 8th of Chordino's types
    assert out["chords"].tolist() == [c] * 5 + [am7] * 10 + [n] * 5
    # frame centres 0.05, 0.15, ...: 0.25..0.55 lie in the first note; MIDI 100 is above the 53-note range
    assert out["melody"].tolist() == [53, 53] + [60 - 43] * 4 + [53] * 14
    assert out["chords"].dtype == np.int64 and out["melody"].dtype == np.int64
    shifted = C.controls_from_labels(labels, frame_rate=10, n_frames=10, offset=0.5)
    assert shifted["chords"].tolist() == [am7] * 10
    assert shifted["melody"].tolist() == [17] + [53] * 9


def test_control_vocab():
    assert C.control_vocab(2048) == {"chords": 193, "melody": 54, "drums": 2048}


@pytest.fixture(scope="module")
def codec():
    cfg = resolve("tiny")
    return Codec.from_config(cfg.codec, 32000)


def test_blur_averages_blocks_of_five():
    z = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)
    b = C.blur_latent(z)
    assert b.shape == z.shape
    assert torch.allclose(b[:, 0], z[:, :5].mean(1)) and torch.allclose(b[:, 4], z[:, :5].mean(1))
    assert torch.allclose(b[:, 7], z[:, 5:10].mean(1))
    assert torch.allclose(b[:, 11], z[:, 10:12].mean(1))  # last partial block


def test_drums_from_latent_blur_then_first_codebook(codec):
    g = torch.Generator().manual_seed(1234)
    means = torch.randn(2, 5, codec.latent_dim, generator=g)
    wiggle = torch.randn(2, 23, codec.latent_dim, generator=g)
    wiggle = wiggle - C.blur_latent(wiggle)  # zero-mean within each 5-frame block
    latent = means.repeat_interleave(5, dim=1)[:, :23] + wiggle
    drums = C.drums_from_latent(codec, latent)
    assert drums.shape == (2, 23) and drums.dtype == torch.int64
    assert int(drums.min()) >= 0 and int(drums.max()) < codec.codebook_size
    for blk in range(5):
        seg = drums[:, blk * 5: min(23, blk * 5 + 5)]
        assert torch.all(seg == seg[:, :1])  # identical blurred block -> identical token
    assert torch.equal(drums, codec.quantize(C.blur_latent(latent))[:, 0])
    assert not torch.equal(drums, codec.quantize(latent)[:, 0])  # the blur matters
    # two blocks with the same mean get the same token
    same = means.clone()
    same[:, 3] = same[:, 1]
    d2 = C.drums_from_latent(codec, same.repeat_interleave(5, dim=1))
    assert torch.equal(d2[:, 15:20], d2[:, 5:10])


def test_salience_to_frames_threshold_argmax_and_interpolation():
    sal = np.zeros((11, 53), dtype=np.float32)  # 10 fps, 1 s
    sal[:5, 10] = 0.9
    sal[:5, 11] = 0.7
    sal[5:, 20] = 0.4  # below threshold everywhere
    out = C.salience_to_frames(sal, src_fps=10, frame_rate=5, n_frames=5)
    assert out.tolist() == [10, 10, 53, 53, 53]  # frame centres 0.1, 0.3, (0.5 interpolates to 0.45), ...


def test_chroma_template_fallback_finds_a_progression():
    prog = [(60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60)]  # C G Am F, 1.5 s each
    x = np.concatenate([sum(_tone(m, 1.5) for m in ch) / 6 for ch in prog]).astype(np.float32)
    res = C.chords_from_audio(x, SR, method="chroma-template")
    assert res["method"] == "chroma-template"
    frames = C.segments_to_frames(res["segments"], frame_rate=10, n_frames=60)
    for i, name in enumerate(["C", "G", "Am", "F"]):
        mid = frames[i * 15 + 4: i * 15 + 11]
        assert np.all(mid == chord_index(name)), (name, res["segments"])


def test_chordino_finds_a_progression(require_estimator):
    require_estimator(C.chordino_available())
    prog = [(60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60)]
    x = np.concatenate([sum(_tone(m, 2.0) for m in ch) / 6 for ch in prog]).astype(np.float32)
    res = C.chords_from_audio(x, SR)
    assert res["method"] == "chordino"
    labels = [s[0] for s in res["segments"] if s[0] != "N"]
    assert labels == ["C", "G", "Am", "F"]


def test_harmonic_sum_melody_and_silence():
    notes = [72, 76, 79, 67]
    x = (np.concatenate([_tone(m, 0.5) for m in notes]) * 0.3).astype(np.float32)
    res = C.melody_from_audio(x, SR, frame_rate=20, method="harmonic-sum")
    assert res["method"] == "harmonic-sum" and res["melody"].shape == (40,)
    for i, m in enumerate(notes):
        assert np.all(res["melody"][i * 10 + 2: i * 10 + 8] == m - 43), res["melody"]
    silent = C.melody_from_audio(np.zeros(SR, np.float32), SR, frame_rate=20, method="harmonic-sum")
    assert np.all(silent["melody"] == MELODY_NONE)


def test_controls_from_audio_names_its_methods():
    x = (sum(_tone(m, 1.0) for m in (60, 64, 67)) / 6).astype(np.float32)
    out = C.controls_from_audio(x, SR, frame_rate=10, n_frames=10, chord_method="chroma-template",
                                melody_method="harmonic-sum")
    assert out["methods"] == {"chords": "chroma-template", "melody": "harmonic-sum"}
    assert out["chords"].shape == (10,) and out["chords"][5] == chord_index("C")
    with pytest.raises(ValueError, match="chord method"):
        C.chords_from_audio(x, SR, method="nope")


def test_a_missing_chordino_is_reported_not_hidden(monkeypatch):
    from arfm.evaluate.estimators import Availability

    gone = Availability("Chordino (chord-extractor)", False, "import vamp failed: ImportError: x")
    monkeypatch.setattr(C, "chordino_available", lambda: gone)
    x = np.zeros(SR, dtype=np.float32)
    res = C.chords_from_audio(x, SR)
    assert res["method"] == "chroma-template" and "ImportError: x" in res["fallback"]
    with pytest.raises(RuntimeError, match="import vamp failed: ImportError: x"):
        C.chords_from_audio(x, SR, method="chordino")
