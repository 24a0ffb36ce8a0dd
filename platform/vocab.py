"""Symbol vocabularies for the temporal controls (appendix C).

Chords: the classes are Chordino's own. The nnls-chroma plugin that ``chord-extractor`` ships has no
``chord.dict`` beside it, so Chordino uses its built-in dictionary (``chromamethods.cpp``,
``staticChordnames`` / ``staticChordvalues``): 18 templates per root, each a 12-bin bass chroma and a 12-bin
chord chroma. Two of them repeat a label (the major and minor triads with no bass note print as ``C`` and
``Cm``, like the root-position templates), so Chordino writes 16 distinct labels per root, in this order
(shown for C; a slash chord's bass is spelled with Chordino's ``bassnames`` table, :data:`CHORDINO_BASS_NAMES`):

    C  Cm  Cm7b5/Bb  Cm7b5  C6  C7  Cmaj7  Cm7  Cm6  C/E  C/G  Cdim  Caug  C/D  C/Bb  C7/E

12 roots x 16 types + ``N`` (no chord) = 193 classes: index ``16 * root + type`` with the roots in Chordino's
spelling ``C C# D Eb E F F# G Ab A Bb B`` and the types in Chordino's order (:data:`CHORD_TYPES`), ``N`` last
(192). Every label Chordino can print maps to one index and every index back to that label
(:func:`chord_index`, :func:`chord_from_index`). Another spelling of the same root or bass (``Dbmaj7``,
``C#/F``) is read as the same chord; any other label (a quality or a bass the dictionary lacks: ``Csus4``,
``Am/C``, ``C9``) raises :class:`UnknownChord`, it is never folded into a nearby class.

Melody: the paper names a 53-note range starting at G2 (MIDI 43). 53 semitones from G2 end at B6 (MIDI 95);
the paper's "G2 to B7" spans 65 semitones, so we keep the paper's class count (53) and its lower bound, and
index 53 means "no melody note".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # Chordino's root names
_ALIASES = {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "B#": 0, "E#": 5, "Fb": 4}


@dataclass(frozen=True)
class ChordType:
    """One of Chordino's chord types: what it prints after the root, its chord tones and its bass note."""

    name: str  # the type's key: the printed suffix with the bass as a degree ("", "m7b5/b7", "/3", "7/3")
    quality: str  # printed after the root, before any slash ("", "m", "m7b5", "7", ...)
    intervals: tuple[int, ...]  # chord tones in semitones above the root (Chordino's chord chroma)
    bass: int = 0  # bass note in semitones above the root (0: root position); a slash chord otherwise


_DEGREE = {2: "2", 4: "3", 7: "5", 10: "b7"}
_TYPES = (  # Chordino's built-in templates in its order, the two label repeats left out
    ("", (0, 4, 7), 0), ("m", (0, 3, 7), 0), ("m7b5", (0, 3, 6, 10), 10), ("m7b5", (0, 3, 6, 10), 0),
    ("6", (0, 4, 7, 9), 0), ("7", (0, 4, 7, 10), 0), ("maj7", (0, 4, 7, 11), 0), ("m7", (0, 3, 7, 10), 0),
    ("m6", (0, 3, 7, 9), 0), ("", (0, 4, 7), 4), ("", (0, 4, 7), 7), ("dim", (0, 3, 6), 0),
    ("aug", (0, 4, 8), 0), ("", (0, 4, 7), 2), ("", (0, 4, 7), 10), ("7", (0, 4, 7, 10), 4),
)
CHORD_TYPES: dict[str, ChordType] = {}
for _q, _iv, _b in _TYPES:
    _t = ChordType(_q + (f"/{_DEGREE[_b]}" if _b else ""), _q, _iv, _b)
    CHORD_TYPES[_t.name] = _t
_TYPE_NAMES = tuple(CHORD_TYPES)
_BY_QUALITY_BASS = {(t.quality, t.bass): i for i, t in enumerate(CHORD_TYPES.values())}

# Chordino's ``bassnames`` rows (root A, Bb, ..., Ab as in chromamethods.cpp), column = semitones above the
# root; only columns 2, 4, 7 and 10 are used by the built-in dictionary.
_BASSNAMES_FROM_A = (
    ("A", "", "B", "C", "C#", "D", "", "E", "", "F#", "G", "G#"),
    ("Bb", "", "C", "Db", "D", "Eb", "", "F", "", "G", "Ab", "A"),
    ("B", "", "C#", "D", "D#", "E", "", "F#", "", "G#", "A", "A#"),
    ("C", "", "D", "Eb", "E", "F", "", "G", "", "A", "Bb", "B"),
    ("C#", "", "D#", "E", "E#", "F#", "", "G#", "", "A#", "B", "B#"),
    ("D", "", "E", "F", "F#", "G", "", "A", "", "B", "C", "C#"),
    ("Eb", "", "F", "Gb", "G", "Ab", "", "Bb", "", "C", "Db", "D"),
    ("E", "", "F#", "G", "G#", "A", "", "B", "", "C#", "D", "D#"),
    ("F", "", "G", "Ab", "A", "Bb", "", "C", "", "D", "Eb", "E"),
    ("F#", "", "G#", "A", "A#", "B", "", "C#", "", "D#", "E", "E#"),
    ("G", "", "A", "Bb", "B", "C", "", "D", "", "E", "F", "F#"),
    ("Ab", "", "Bb", "Cb", "C", "Db", "", "Eb", "", "F", "Gb", "G"),
)
CHORDINO_BASS_NAMES = tuple(_BASSNAMES_FROM_A[(root - 9) % 12] for root in range(12))  # indexed by root from C

NO_CHORD = "N"
N_CHORD_TYPES = len(CHORD_TYPES)  # 16
N_CHORDS = 12 * N_CHORD_TYPES + 1  # 193, index 192 is "N"
CHORD_NULL = N_CHORDS  # the learned null token used for condition dropout (one past the vocabulary)

MELODY_LOW_MIDI = 43  # G2
N_MELODY_NOTES = 53
MELODY_NONE = N_MELODY_NOTES  # index 53: no note above threshold
MELODY_NULL = N_MELODY_NOTES + 1  # learned null token for dropout

_LABEL = re.compile(r"^([A-G](?:#|b)?)([^/]*?)(?:/([A-G](?:#|b)?|\d+))?$")


class UnknownChord(ValueError):
    """A chord label outside Chordino's dictionary (the message names the label and the vocabulary)."""


def pitch_class(name: str) -> int:
    if name in PITCH_CLASSES:
        return PITCH_CLASSES.index(name)
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f"unknown pitch name {name!r}")


def chord_label(root: int, chord_type: str) -> str:
    """``(0, "m7")`` -> ``"Cm7"``; ``(7, "/3")`` -> ``"G/B"``: the label exactly as Chordino prints it."""
    if chord_type not in CHORD_TYPES:
        raise UnknownChord(f"unknown chord type {chord_type!r}; Chordino's types: {list(_TYPE_NAMES)}")
    t = CHORD_TYPES[chord_type]
    label = PITCH_CLASSES[root % 12] + t.quality
    return label + "/" + CHORDINO_BASS_NAMES[root % 12][t.bass] if t.bass else label


def _unknown(label: str, why: str) -> UnknownChord:
    return UnknownChord(f"chord label {label!r} is not in Chordino's vocabulary ({why}); per root it has "
                        f"{', '.join(chord_label(0, t) for t in _TYPE_NAMES)} (shown for C), and N for no chord")


def parse_chord(label: str) -> tuple[int, str] | None:
    """``"F#m7"`` -> ``(6, "m7")``, ``"G/B"`` -> ``(7, "/3")``, ``"N"`` -> None; :class:`UnknownChord` for a
    label outside the vocabulary."""
    label = str(label).strip()
    if label == NO_CHORD:
        return None
    m = _LABEL.match(label)
    if not m:
        raise _unknown(label, "cannot parse it")
    try:
        root = pitch_class(m.group(1))
        bass = 0 if m.group(3) is None else (pitch_class(m.group(3)) - root) % 12
    except ValueError as e:
        raise _unknown(label, str(e)) from None
    if m.group(3) is not None and bass == 0:
        raise _unknown(label, "a slash bass equal to the root")
    k = _BY_QUALITY_BASS.get((m.group(2), bass))
    if k is None:
        raise _unknown(label, f"no type {m.group(2) or 'major'!r}" + (f" with bass {m.group(3)}" if bass else ""))
    return root, _TYPE_NAMES[k]


def chord_index(label: str) -> int:
    """Index in ``[0, 193)`` of a Chordino label; ``N`` is 192. :class:`UnknownChord` otherwise."""
    parsed = parse_chord(label)
    if parsed is None:
        return N_CHORDS - 1
    root, t = parsed
    return root * N_CHORD_TYPES + _TYPE_NAMES.index(t)


def chord_from_index(index: int) -> str:
    """The label Chordino prints for class ``index`` (``N`` for 192)."""
    if index == N_CHORDS - 1:
        return NO_CHORD
    if not 0 <= index < N_CHORDS:
        raise ValueError(f"chord index {index} outside [0, {N_CHORDS})")
    root, k = divmod(index, N_CHORD_TYPES)
    return chord_label(root, _TYPE_NAMES[k])


def chord_labels() -> tuple[str, ...]:
    """All 193 labels in index order (``N`` last)."""
    return tuple(chord_from_index(i) for i in range(N_CHORDS))


def chord_pitch_classes(label: str) -> tuple[int, ...]:
    """Sorted pitch classes that sound in the chord: its chord tones and its bass (``C/D`` -> C, D, E, G)."""
    parsed = parse_chord(label)
    if parsed is None:
        return ()
    root, name = parsed
    t = CHORD_TYPES[name]
    return tuple(sorted({(root + i) % 12 for i in (*t.intervals, t.bass)}))


def chord_bass(label: str) -> int | None:
    """Pitch class of the chord's bass note (the root unless it is a slash chord); None for ``N``."""
    parsed = parse_chord(label)
    if parsed is None:
        return None
    root, name = parsed
    return (root + CHORD_TYPES[name].bass) % 12


def chord_templates() -> np.ndarray:
    """Binary chroma templates ``[192, 12]`` (sounding pitch classes) for every chord of the vocabulary."""
    t = np.zeros((N_CHORDS - 1, 12), dtype=np.float32)
    for i in range(N_CHORDS - 1):
        for pc in chord_pitch_classes(chord_from_index(i)):
            t[i, pc] = 1.0
    return t


def slash_chords() -> np.ndarray:
    """``bool[192]``: which classes have a bass other than the root (an estimator without a bass chroma cannot
    tell ``C/E`` from ``C``, and prefers the root-position class)."""
    return np.array([CHORD_TYPES[_TYPE_NAMES[i % N_CHORD_TYPES]].bass != 0 for i in range(N_CHORDS - 1)])


def melody_index(midi: float | None) -> int:
    """MIDI pitch -> class in ``[0, 53)``, or 53 (none) when silent or out of range."""
    if midi is None or not np.isfinite(midi):
        return MELODY_NONE
    k = int(round(midi)) - MELODY_LOW_MIDI
    return k if 0 <= k < N_MELODY_NOTES else MELODY_NONE


def segments_to_frames(segments: list[tuple[str, float, float]], frame_rate: float, n_frames: int) -> np.ndarray:
    """Chord ``(label, start, end)`` segments -> chord index per latent frame (N where nothing is given).

    Switch times are quantized to the frame grid: frame ``i`` covers ``[i/fr, (i+1)/fr)`` and takes the chord
    active at its centre, repeating it until the next switch (appendix C). A label outside the vocabulary
    raises :class:`UnknownChord`.
    """
    out = np.full(n_frames, N_CHORDS - 1, dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    for label, start, end in segments:
        out[(centres >= start) & (centres < end)] = chord_index(label)
    return out
