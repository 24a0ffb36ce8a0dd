"""Chord IOU (appendix C) through mir_eval with hand-computed answers, and the estimators against exact labels."""

import pytest

from arfm.evaluate.chords import (changes_to_segments, chord_iou, chord_iou_metric, chordino_available,
                                  estimate_chords, harte)


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


def test_iou_is_a_function_of_mir_evals_weighted_accuracy():
    """IOU = A / (2 - A) with A the score of mir_eval.chord.evaluate (computed here by mir_eval itself)."""
    import mir_eval
    import numpy as np

    ref = [("C", 0.0, 1.5), ("Am7", 1.5, 2.5), ("F/A", 2.5, 4.0)]
    est = [("C", 0.0, 1.0), ("Am", 1.0, 2.7), ("F", 2.7, 4.0)]
    ri, rl = np.array([[s, e] for _, s, e in ref]), [harte(x) for x, _, _ in ref]
    ei, el = np.array([[s, e] for _, s, e in est]), [harte(x) for x, _, _ in est]
    scores = mir_eval.chord.evaluate(ri, rl, ei, el)
    for vocab in ("majmin", "sevenths", "tetrads", "mirex", "root"):
        a = scores[vocab]
        assert chord_iou(est, ref, 4.0, vocab=vocab) == pytest.approx(a / (2 - a)), vocab


def test_labels_follow_mirex_rules_not_a_folding():
    assert harte("G/B") == "G:maj/3" and harte("Ebm7b5") == "Eb:hdim7" and harte("N") == "N"
    assert harte("Cmaj") == "C:maj" and harte("F#m7/A") == "F#:min7/b3" and harte("H7") == "X"
    ref = [("Cmaj", 0.0, 1.0), ("G/B", 1.0, 2.0)]
    assert chord_iou([("C", 0.0, 1.0), ("G", 1.0, 2.0)], ref) == 1.0  # the bass is not compared (tetrads)
    # a sus4 reference is outside the majmin vocabulary: MIREX leaves that time out rather than calling it major
    est, ref = [("C", 0.0, 2.0), ("Cm", 2.0, 4.0)], [("C", 0.0, 2.0), ("Csus4", 2.0, 4.0)]
    assert chord_iou(est, ref, vocab="majmin") == 1.0
    assert chord_iou(est, ref, vocab="mirex") == pytest.approx(1 / 3)  # Cm and Csus4 share 2 notes, not 3
    # a diminished chord is not a minor chord under any rule
    assert chord_iou([("Cm", 0.0, 2.0)], [("Cdim", 0.0, 2.0)], vocab="mirex") == 0.0
    assert chord_iou([("Cm", 0.0, 2.0)], [("Cdim", 0.0, 2.0)], vocab="sevenths") is None  # nothing to judge
    assert chord_iou([("C7", 0.0, 2.0)], [("C", 0.0, 2.0)], vocab="majmin") == 1.0
    assert chord_iou([("C7", 0.0, 2.0)], [("C", 0.0, 2.0)], vocab="tetrads") == 0.0
    with pytest.raises(ValueError, match="mir_eval"):
        chord_iou(ref, ref, vocab="jazz")


def test_change_points_to_segments():
    segs = changes_to_segments([("N", 0.0), ("C", 0.5), ("G", 2.0)], 4.0)
    assert segs == [("N", 0.0, 0.5), ("C", 0.5, 2.0), ("G", 2.0, 4.0)]


def test_chordino_is_available_or_says_why(require_estimator):
    avail = chordino_available()
    require_estimator(avail)
    assert avail.reason == "" and "available" in str(avail)


# floors just under what each estimator measures on these clips (deterministic estimators, fixed clips)
RENDERED_FLOOR = {"chordino": 0.85, "chroma-template": 0.95}  # measured 0.877 and 0.978 (tetrads)
# the corpus draws Chordino's chords (arfm.vocab): these clips now hold more sevenths, which the bass-less
# chroma-template fallback confuses with triads on another root (a lo-fi clip of maj7 chords scores 0.23)
SYNTH_FLOOR = {"chordino": 0.79, "chroma-template": 0.70}  # measured 0.810 and 0.731 (majmin)


@pytest.mark.parametrize("method", ["chordino", "chroma-template"])
def test_estimators_on_rendered_triads(method, labelled_clips, sr, require_estimator):
    """Clips of major/minor triads against their exact labels, root and full quality (tetrads)."""
    if method == "chordino":
        require_estimator(chordino_available())
    gens = [x for x, _ in labelled_clips]
    refs = [lab["chords"] for _, lab in labelled_clips]
    res = chord_iou_metric(gens, refs, sr, method=method)
    assert res.method == f"{method} vs labels, tetrads" and res.n == len(gens)
    assert res.extra["estimator"] == method and res.extra["fallback"] is None
    assert res.value >= RENDERED_FLOOR[method], res.per_sample


@pytest.mark.parametrize("method", ["chordino", "chroma-template"])
def test_estimators_on_the_synthetic_corpus(method, synth_clips, require_estimator):
    """arfm.data.synth clips (seventh chords and inversions, comping, melody, reverb) against their exact labels, at the
    MIREX 'majmin' level."""
    if method == "chordino":
        require_estimator(chordino_available())
    gens = [x for x, _ in synth_clips]
    refs = [lab["chords"] for _, lab in synth_clips]
    res = chord_iou_metric(gens, refs, 32000, method=method, vocab="majmin")
    assert res.method == f"{method} vs labels, majmin"
    assert res.value >= SYNTH_FLOOR[method], res.per_sample


def test_reference_audio_is_another_rendering(render, sr):
    """Against reference *audio*, chords are estimated on both sides: another rendering of the same chords
    (other voicing seed, no drums, no melody) agrees; the same chords a bar later disagree."""
    prog = ["C", "G", "Am", "F", "C"]
    x, _ = render(prog, seed=0)
    same, _ = render(prog, seed=5, drums=False, melody=False)
    late, _ = render(["F"] + prog[:-1], seed=0)
    res = chord_iou_metric([x, x], [same, late], sr, method="chroma-template")
    assert res.method == "chroma-template vs audio, tetrads"
    assert res.per_sample[0] >= 0.9 and res.per_sample[1] <= 0.1, res.per_sample
    est = estimate_chords(x, sr, "chroma-template")
    assert [s[0] for s in est.segments][:4] == ["C", "G", "Am", "F"]


def test_a_missing_chordino_falls_back_and_says_why(monkeypatch, labelled_clips, sr):
    from arfm.evaluate import chords
    from arfm.evaluate.estimators import Availability

    gone = Availability("Chordino (chord-extractor)", False, "import vamp failed: ImportError: no vamp")
    monkeypatch.setattr(chords, "chordino_available", lambda: gone)
    res = chords.chord_iou_metric([labelled_clips[0][0]], [labelled_clips[0][1]["chords"]], sr)
    assert res.extra["estimator"] == "chroma-template" and res.method.startswith("chroma-template vs labels")
    assert "ImportError: no vamp" in res.extra["fallback"]
