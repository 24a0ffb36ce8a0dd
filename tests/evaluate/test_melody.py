"""Melody chroma cosine similarity (MusicGen's 12-bin argmax chroma)."""

import numpy as np
import pytest

from arfm.evaluate.melody import chromagram, melody_label_similarity, melody_similarity, melody_similarity_metric

SR = 32000


def _transpose(chords, k):
    from arfm.vocab import PITCH_CLASSES, parse_chord

    out = []
    for c in chords:
        root, q = parse_chord(c)
        out.append(PITCH_CLASSES[(root + k) % 12] + q)
    return out


def test_chromagram_is_librosas_chroma_at_musicgens_settings(render):
    """An independent computation: librosa's chroma_stft (power spectrogram, periodic Hann, centred reflect
    padding, tuning 0, inf-norm) gives the same dominant pitch class in every frame."""
    import librosa

    x, _ = render(["C", "G", "Am", "F"], seconds=8.0, drums=False)
    c = chromagram(x, SR)
    assert c.shape == (1 + 8 * SR // 4096, 12)  # centred frames, hop 2**14 // 4
    assert np.all(c.sum(axis=1) == 1.0)
    ref = librosa.feature.chroma_stft(y=x.astype(np.float64), sr=SR, n_fft=2 ** 14, hop_length=2 ** 12,
                                      window="hann", center=True, pad_mode="reflect", tuning=0.0, norm=np.inf)
    assert ref.shape[1] == len(c)
    np.testing.assert_array_equal(c.argmax(axis=1), ref.argmax(axis=0))
    a = np.sin(2 * np.pi * 440.0 * np.arange(SR) / SR)  # A4 -> pitch class 9
    assert np.all(chromagram(a, SR)[1:-1].argmax(axis=1) == 9)


def test_another_rendering_agrees_and_a_transposition_does_not(render):
    """The same lead line with other accompaniment (no drums, pad at another level) keeps most frames' pitch
    class; the same music a tone up loses them."""
    prog = ["C", "Am", "F", "G", "C"]
    x, _ = render(prog, seed=0)
    quiet, _ = render(prog, seed=0, drums=False)
    up, _ = render(_transpose(prog, 2), seed=0)
    same = melody_similarity(quiet, x, SR)
    moved = melody_similarity(up, x, SR)
    assert same >= 0.8 and moved <= 0.3, (same, moved)
    res = melody_similarity_metric([quiet, up], [x, x], SR)
    assert res.per_sample == pytest.approx([same, moved]) and res.value == pytest.approx((same + moved) / 2)
    assert res.method == "chroma-argmax (MusicGen) vs audio"


def test_resampled_input_and_label_references(render):
    x, lab = render(["C", "F"], seconds=4.0, drums=False)
    x16 = x[::2]  # 16 kHz: resampled to 32 kHz inside, the pitch classes must not move
    assert np.array_equal(chromagram(x16, SR // 2)[1:-1].argmax(1), chromagram(x, SR)[1:-1].argmax(1))
    a = np.sin(2 * np.pi * 440.0 * np.arange(2 * SR) / SR).astype(np.float32)
    assert melody_label_similarity(a, [[69, 0.0, 2.0]], SR) == pytest.approx(1.0)  # A4 = pitch class 9
    assert melody_label_similarity(a, [[71, 0.0, 2.0]], SR) == pytest.approx(0.0)
    assert melody_label_similarity(a, [], SR) is None
    res = melody_similarity_metric([a], [[[69, 0.0, 2.0]]], SR)
    assert res.value == pytest.approx(1.0) and res.method == "chroma-argmax (MusicGen) vs labels"
