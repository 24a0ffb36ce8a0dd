"""Symbol vocabularies for the temporal controls (appendix C).

Chords: Chordino's vocabulary has 193 classes, 12 roots x 16 qualities plus ``N`` (no chord). Labels are
written the way Chordino writes them (``C``, ``Am``, ``F#7``, ``Bbmaj7``, ``Ebm7b5``, ``G/B``); a slash bass
is dropped before indexing, except for the three inversion qualities Chordino reports as their own class
(``/3``, ``/5`` and ``7/3`` are mapped to the chord's root-position quality here; Chordino's slash labels are
kept as strings in the raw labels so nothing is lost).

Melody: the paper names a 53-note range starting at G2 (MIDI 43). 53 semitones from G2 end at B6 (MIDI 95);
the paper's "G2 to B7" spans 65 semitones, so we keep the paper's class count (53) and its lower bound, and
index 53 means "no melody note".
"""

from __future__ import annotations

import re

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_ALIASES = {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "B#": 0, "E#": 5, "Fb": 4}

# quality suffix -> intervals (semitones above the root). 16 qualities, Chordino-style suffixes.
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "": (0, 4, 7),
    "m": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "sus4": (0, 5, 7),
    "sus2": (0, 2, 7),
    "9": (0, 4, 7, 10, 2),
    "maj9": (0, 4, 7, 11, 2),
    "m9": (0, 3, 7, 10, 2),
}
NO_CHORD = "N"
N_CHORDS = 12 * len(CHORD_QUALITIES) + 1  # 193, index 192 is "N"
CHORD_NULL = N_CHORDS  # the learned null token used for condition dropout (one past the vocabulary)

MELODY_LOW_MIDI = 43  # G2
N_MELODY_NOTES = 53
MELODY_NONE = N_MELODY_NOTES  # index 53: no note above threshold
MELODY_NULL = N_MELODY_NOTES + 1  # learned null token for dropout

_LABEL = re.compile(r"^([A-G](?:#|b)?)(.*?)(?:/([A-G](?:#|b)?|\d+))?$")
_QUALITY_ALIASES = {"maj": "", "min": "m", "M7": "maj7", "min7": "m7", "hdim7": "m7b5", "hdim": "m7b5",
                    "7/3": "7", "/3": "", "/5": "", "min6": "m6", "maj6": "6", "o": "dim", "+": "aug"}


def pitch_class(name: str) -> int:
    if name in PITCH_CLASSES:
        return PITCH_CLASSES.index(name)
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f"unknown pitch name {name!r}")


def chord_label(root: int, quality: str) -> str:
    if quality not in CHORD_QUALITIES:
        raise ValueError(f"unknown chord quality {quality!r}; known: {sorted(CHORD_QUALITIES)}")
    return PITCH_CLASSES[root % 12] + quality


def parse_chord(label: str) -> tuple[int, str] | None:
    """``"F#m7/A"`` -> (6, "m7"); ``"N"`` -> None. Unknown qualities fall back to major/minor by their third."""
    label = label.strip()
    if label in ("N", "", "X"):
        return None
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"cannot parse chord label {label!r}")
    root = pitch_class(m.group(1))
    q = _QUALITY_ALIASES.get(m.group(2), m.group(2))
    if q not in CHORD_QUALITIES:
        q = "m" if q.startswith("m") and not q.startswith("maj") else ""
    return root, q


def chord_index(label: str) -> int:
    """Index in ``[0, 193)``; ``N`` is 192."""
    parsed = parse_chord(label)
    if parsed is None:
        return N_CHORDS - 1
    root, q = parsed
    return root * len(CHORD_QUALITIES) + list(CHORD_QUALITIES).index(q)


def chord_from_index(index: int) -> str:
    if index == N_CHORDS - 1:
        return NO_CHORD
    if not 0 <= index < N_CHORDS:
        raise ValueError(f"chord index {index} outside [0, {N_CHORDS})")
    root, qi = divmod(index, len(CHORD_QUALITIES))
    return chord_label(root, list(CHORD_QUALITIES)[qi])


def chord_pitch_classes(label: str) -> tuple[int, ...]:
    parsed = parse_chord(label)
    if parsed is None:
        return ()
    root, q = parsed
    return tuple(sorted({(root + i) % 12 for i in CHORD_QUALITIES[q]}))


def chord_templates() -> np.ndarray:
    """Binary chroma templates ``[192, 12]`` for every chord of the vocabulary (N excluded)."""
    t = np.zeros((N_CHORDS - 1, 12), dtype=np.float32)
    for i in range(N_CHORDS - 1):
        for pc in chord_pitch_classes(chord_from_index(i)):
            t[i, pc] = 1.0
    return t


def melody_index(midi: float | None) -> int:
    """MIDI pitch -> class in ``[0, 53)``, or 53 (none) when silent or out of range."""
    if midi is None or not np.isfinite(midi):
        return MELODY_NONE
    k = int(round(midi)) - MELODY_LOW_MIDI
    return k if 0 <= k < N_MELODY_NOTES else MELODY_NONE


def segments_to_frames(segments: list[tuple[str, float, float]], frame_rate: float, n_frames: int) -> np.ndarray:
    """Chord ``(label, start, end)`` segments -> chord index per latent frame (N where nothing is given).

    Switch times are quantized to the frame grid: frame ``i`` covers ``[i/fr, (i+1)/fr)`` and takes the chord
    active at its centre, repeating it until the next switch (appendix C).
    """
    out = np.full(n_frames, N_CHORDS - 1, dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    for label, start, end in segments:
        out[(centres >= start) & (centres < end)] = chord_index(label)
    return out
