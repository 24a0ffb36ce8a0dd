"""Chord IOU (appendix C) with hand-computed answers, and estimator accuracy against exact labels."""

import pytest

from arfm.evaluate.chords import changes_to_segments, chord_iou, chord_iou_metric, chordino_available, estimate_chords


def test_identical_disjoint_and_shifted_sequences():
    ref = [("C", 0.0, 2.0), ("G", 2.0, 4.0)]
    assert chord_iou(ref, ref) == 1.0
    assert chord_iou([("Am", 0.0, 2.0), ("F", 2.0, 4.0)], ref) == 0.0
    # shifted by half a chord: agreement on [1, 2) and [3, 4): T_agree = 2 of D = 4 -> 2 / (8 - 2) = 1/3
    shifted = [("N", 0.0, 1.0), ("C", 1.0, 3.0), ("G", 3.0, 4.0)]
    assert chord_iou(shifted, ref) == pytest.approx(1 / 3)
    # agreement on 3 s of 4: 3 / (8 - 3) = 0.6; uncovered time counts as N on both sides
    assert chord_iou([("C", 0.0, 2.0), ("G", 2.0, 3.0)], [("C", 0.0, 2.0), ("G", 2.0, 3.0), ("D", 3.0, 4.0)]) \
        == pytest.approx(0.6)


def test_labels_compare_by_vocabulary_index_and_reduction():
    ref = [("Cmaj", 0.0, 1.0), ("G/B", 1.0, 2.0)]
    assert chord_iou([("C", 0.0, 1.0), ("G", 1.0, 2.0)], ref) == 1.0
    ninth = [("Cm9", 0.0, 2.0)]
    assert chord_iou(ninth, [("Cm7", 0.0, 2.0)]) == 0.0
    assert chord_iou(ninth, [("Cm7", 0.0, 2.0)], vocab="sevenths") == 1.0
    assert chord_iou(ninth, [("Cm", 0.0, 2.0)], vocab="majmin") == 1.0
    with pytest.raises(ValueError):
        chord_iou(ninth, ninth, vocab="jazz")


def test_change_points_to_segments():
    segs = changes_to_segments([("N", 0.0), ("C", 0.5), ("G", 2.0)], 4.0)
    assert segs == [("N", 0.0, 0.5), ("C", 0.5, 2.0), ("G", 2.0, 4.0)]


@pytest.mark.parametrize("method", ["chordino", "chroma-template"])
def test_estimators_on_rendered_triads(method, labelled_clips, sr):
    """Full 193-class vocabulary on clips of major/minor triads: mean IOU >= 0.6 (measured 0.88 / 0.98)."""
    if method == "chordino" and not chordino_available():
        pytest.skip("chord-extractor not installed")
    gens = [x for x, _ in labelled_clips]
    refs = [lab["chords"] for _, lab in labelled_clips]
    res = chord_iou_metric(gens, refs, sr, method=method)
    assert res.method == method and res.n == len(gens)
    assert res.value >= 0.6, res.per_sample


@pytest.mark.parametrize("method", ["chordino", "chroma-template"])
def test_estimators_on_the_synthetic_corpus(method, synth_clips):
    """arfm.data.synth clips (extended chords, comping, melody, reverb) against their exact labels, at the
    MIREX 'majmin' level: mean IOU >= 0.6 (measured 0.77 Chordino, 0.80 chroma-template on seed 3).
    Chordino has no 9th chords, so its full-vocabulary IOU on this corpus is lower (0.57)."""
    if method == "chordino" and not chordino_available():
        pytest.skip("chord-extractor not installed")
    gens = [x for x, _ in synth_clips]
    refs = [lab["chords"] for _, lab in synth_clips]
    res = chord_iou_metric(gens, refs, 32000, method=method, vocab="majmin")
    assert res.method == f"{method} (majmin)"
    assert res.value >= 0.6, res.per_sample


def test_reference_audio_is_estimated_with_the_same_method(labelled_clips, sr):
    x, _ = labelled_clips[0]
    res = chord_iou_metric([x], [x], sr, method="chroma-template")
    assert res.value == 1.0
    est = estimate_chords(x, sr, "chroma-template")
    assert [s[0] for s in est.segments][:4] == ["C", "G", "Am", "F"]
