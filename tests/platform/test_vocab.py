"""The chord vocabulary is Chordino's own dictionary: one class per label Chordino prints, no folding."""

from __future__ import annotations

import numpy as np
import pytest

from arfm.vocab import (CHORD_TYPES, N_CHORDS, NO_CHORD, PITCH_CLASSES, UnknownChord, chord_bass, chord_from_index,
                        chord_index, chord_label, chord_labels, chord_pitch_classes, parse_chord, segments_to_frames)

# What Chordino's built-in dictionary (nnls-chroma chromamethods.cpp, staticChordnames, Harte syntax off) prints
# for the root C, template by template; the second "C" and "Cm" are the bass-less triad templates.
CHORDINO_C = ["C", "C", "Cm", "Cm", "Cm7b5/Bb", "Cm7b5", "C6", "C7", "Cmaj7", "Cm7", "Cm6", "C/E", "C/G", "Cdim",
              "Caug", "C/D", "C/Bb", "C7/E"]


def test_193_classes_one_per_chordino_label_and_back():
    labels = chord_labels()
    assert N_CHORDS == 193 == len(labels) == len(set(labels)) and labels[-1] == NO_CHORD == chord_from_index(192)
    assert len(CHORD_TYPES) == 16 and list(labels[:16]) == list(dict.fromkeys(CHORDINO_C))
    for i, label in enumerate(labels):
        assert chord_index(label) == i and chord_from_index(i) == label
    for root, name in enumerate(PITCH_CLASSES):
        assert labels[16 * root] == name
    # Chordino's bass spellings (its bassnames table), e.g. C#'s major third is E#, Ab's flat seventh Gb
    assert {"C#/E#", "C#7/E#", "Ab/Gb", "F#/A#", "Ebm7b5/Db", "G/B", "B/A"} <= set(labels)
    with pytest.raises(ValueError):
        chord_from_index(193)


def test_other_spellings_are_the_same_chord_and_unknown_labels_raise():
    assert chord_index("Dbmaj7") == chord_index("C#maj7") and chord_index("C#/F") == chord_index("C#/E#")
    assert chord_index("Gb/Bb") == chord_index("F#/A#")
    assert parse_chord("G/B") == (7, "/3") and parse_chord("Bm7b5/A") == (11, "m7b5/b7") and parse_chord("N") is None
    assert chord_pitch_classes("C/D") == (0, 2, 4, 7) and chord_bass("C/D") == 2 and chord_bass("Am") == 9
    assert chord_label(7, "7/3") == "G7/B"
    for bad in ("Csus4", "C9", "Cdim7", "Am/C", "Cmaj7/E", "C/C", "X", "", "H", "Cm7b5/G"):
        with pytest.raises(UnknownChord, match="not in Chordino's vocabulary"):
            chord_index(bad)
    with pytest.raises(UnknownChord):
        segments_to_frames([("C", 0.0, 1.0), ("Fsus2", 1.0, 2.0)], 10.0, 20)


# every chord type once (C: the roots are spread over the circle of fifths and the types over the progression)
PROGRESSION = [(0, ""), (9, "m7"), (5, "/3"), (7, "7"), (2, "m7b5"), (7, "7/3"), (0, "/5"), (10, "/2"), (0, "/b7"),
               (4, "dim"), (8, "aug"), (5, "6"), (2, "m6"), (5, "maj7"), (11, "m7b5/b7"), (9, "m")]


def test_chordino_labels_of_a_rendered_progression_are_all_in_the_vocabulary(monkeypatch, require_estimator):
    """The synthetic corpus's renderer plays a progression with every chord type, inversions included; Chordino's
    labels for it all map to classes (no unknowns) and most of the time they are the rendered chords."""
    from arfm.controls import chordino_available
    from arfm.data import synth_music
    from arfm.data.synth_render import mix
    from arfm.evaluate.chords import estimate_chords

    require_estimator(chordino_available())
    monkeypatch.setattr(synth_music, "_progression", lambda rng, style, key, mode: list(PROGRESSION))
    arr = synth_music.compose(np.random.default_rng(1), 40.0, "folk")
    audio = mix(arr, 32000, np.random.default_rng(1))
    est = estimate_chords(audio, 32000, "chordino").segments
    unknown = []
    for label, _, _ in est:
        try:
            chord_index(label)
        except UnknownChord:
            unknown.append(label)
    assert not unknown, f"Chordino printed labels outside the vocabulary: {unknown}"
    assert {parse_chord(label)[1] for label, _, _ in arr.chords} == set(CHORD_TYPES)
    # the class sequences agree on most frames (measured 0.90 at 10 frames/s after the first half second)
    ref_frames, est_frames = segments_to_frames(arr.chords, 10.0, 400), segments_to_frames(est, 10.0, 400)
    agree = float(np.mean(ref_frames[5:] == est_frames[5:]))
    assert agree >= 0.8, (agree, arr.chords, est)
    found = {parse_chord(label)[1] for label, _, _ in est if label != NO_CHORD}
    assert {"/3", "/5", "/2", "/b7", "7/3", "m7b5/b7"} <= found, found  # the inversions are heard as such
