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


def test_chromagram_is_one_hot_at_musicgen_hop(render):
    x, _ = render(["C", "G"], seconds=4.0, drums=False)
    c = chromagram(x, SR)
    assert c.shape == (1 + 4 * SR // 4096, 12)  # centred frames, hop 2**14 // 4
    assert np.all(c.sum(axis=1) == 1.0)
    a = np.sin(2 * np.pi * 440.0 * np.arange(SR) / SR)  # A4 -> pitch class 9
    assert np.all(chromagram(a, SR)[1:-1].argmax(axis=1) == 9)


def test_self_similarity_is_one_and_transposition_lowers_it(render):
    prog = ["C", "Am", "F", "G", "C"]
    x, _ = render(prog, seed=0)
    y, _ = render(_transpose(prog, 2), seed=0)
    assert melody_similarity(x, x, SR) == pytest.approx(1.0)
    sim = melody_similarity(y, x, SR)
    assert sim < 0.5
    res = melody_similarity_metric([x, y], [x, x], SR)
    assert res.per_sample[0] == pytest.approx(1.0) and res.per_sample[1] == pytest.approx(sim)
    assert res.value == pytest.approx((1.0 + sim) / 2)


def test_resampled_input_and_label_references(render):
    x, lab = render(["C", "F"], seconds=4.0, drums=False)
    x16 = x[::2]
    assert melody_similarity(x16, x16, SR // 2) == pytest.approx(1.0)
    a = np.sin(2 * np.pi * 440.0 * np.arange(2 * SR) / SR).astype(np.float32)
    assert melody_label_similarity(a, [[69, 0.0, 2.0]], SR) == pytest.approx(1.0)  # A4 = pitch class 9
    assert melody_label_similarity(a, [[71, 0.0, 2.0]], SR) == pytest.approx(0.0)
    assert melody_label_similarity(a, [], SR) is None
    res = melody_similarity_metric([a], [[[69, 0.0, 2.0]]], SR)
    assert res.value == pytest.approx(1.0) and "note labels" in res.method
