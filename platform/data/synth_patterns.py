"""Rhythm tables for the synthetic dataset: melody cells, comping, bass lines and drum patterns.

Positions and lengths are in beats from the start of a bar; velocities are in [0, 1].
"""

from __future__ import annotations

# Melody rhythm cells per metre, in beats (negative = rest).
CELLS = {
    4: ((1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (0.5, 0.5, 1, 1, 1), (1.5, 0.5, 2), (1, 0.5, 0.5, 2),
        (0.5, 0.5, 0.5, 0.5, 1, 1), (2, 2), (3, 1), (1, 1, 0.5, 0.5, 1), (1, 1, 1, -1), (2, 1, -1),
        (1.5, 0.5, 1, 1)),
    3: ((1, 1, 1), (2, 1), (1, 2), (0.5, 0.5, 1, 1), (3,), (1.5, 0.5, 1), (1, 0.5, 0.5, 1), (2, -1)),
}

# drum patterns: kind -> (beat position, velocity) per bar, for 4 and 3 beats per bar
DRUMS = {
    "pop": {4: {"kick": ((0, 1.0), (2, 0.85), (2.5, 0.45)), "snare": ((1, 0.9), (3, 0.9)),
                "hat": tuple((i / 2, 0.5 if i % 2 else 0.7) for i in range(8))},
            3: {"kick": ((0, 1.0),), "snare": ((1, 0.7), (2, 0.7)), "hat": tuple((i / 2, 0.5) for i in range(6))}},
    "rock": {4: {"kick": ((0, 1.0), (2, 0.9), (2.5, 0.5)), "snare": ((1, 1.0), (3, 1.0)),
                 "hat": tuple((i / 2, 0.6 if i % 2 else 0.8) for i in range(8))}},
    "jazz": {4: {"kick": ((0, 0.85), (2, 0.65)), "snare": ((1, 0.7), (3, 0.7)),
                 "ride": ((0, 0.7), (1, 0.8), (1.5, 0.5), (2, 0.7), (3, 0.8), (3.5, 0.5)),
                 "hat": ((1, 0.4), (3, 0.4))},
             3: {"kick": ((0, 0.85),), "snare": ((1, 0.6), (2, 0.6)),
                 "ride": ((0, 0.7), (1, 0.6), (2, 0.6), (2.5, 0.4))}},
    "hiphop": {4: {"kick": ((0, 1.0), (2, 0.75), (2.5, 0.6)), "snare": ((1, 0.95), (3, 0.95)),
                   "hat": tuple((i / 2, 0.45 if i % 2 else 0.6) for i in range(8))}},
    "four": {4: {"kick": ((0, 1.0), (1, 0.9), (2, 0.9), (3, 0.9)), "snare": ((1, 0.7), (3, 0.7)),
                 "open_hat": ((0.5, 0.55), (1.5, 0.55), (2.5, 0.55), (3.5, 0.55)),
                 "hat": tuple((i / 4, 0.3) for i in range(16) if i % 2 == 0)}},
    "folk": {4: {"kick": ((0, 0.95), (2, 0.75)), "snare": ((1, 0.7), (3, 0.7)),
                 "shaker": tuple((i / 2, 0.4 if i % 2 else 0.55) for i in range(8))},
             3: {"kick": ((0, 0.95),), "snare": ((1, 0.6), (2, 0.6)),
                 "shaker": tuple((i / 2, 0.45) for i in range(6))}},
    "funk": {4: {"kick": ((0, 1.0), (1.75, 0.45), (2, 0.85), (2.5, 0.55)), "snare": ((1, 1.0), (3, 1.0)),
                 "hat": tuple((i / 4, 0.55 if i % 2 == 0 else 0.3) for i in range(16))}},
    "ballad": {4: {"kick": ((0, 1.0), (2, 0.8)), "snare": ((1, 0.75), (3, 0.75)),
                   "hat": tuple((i / 2, 0.4) for i in range(8))},
               3: {"kick": ((0, 1.0),), "snare": ((1, 0.6), (2, 0.6)), "hat": tuple((i / 2, 0.35) for i in range(6))}},
    "waltz": {3: {"kick": ((0, 1.0),), "snare": ((1, 0.6), (2, 0.6)), "hat": ((0, 0.5), (1, 0.4), (2, 0.4))}},
}


def comp_pattern(name: str, bpb: int) -> tuple[tuple[float, float], ...]:
    """(position in bar, length in beats) of comping hits; 'arpeggio' hits play one note each."""
    if name == "sustain":
        return ((0, bpb),)
    if name == "halves":
        return ((0, 2), (2, 2)) if bpb == 4 else ((0, 3),)
    if name == "quarters":
        return tuple((i, 1) for i in range(bpb))
    if name == "eighths":
        return tuple((i / 2, 0.5) for i in range(2 * bpb))
    if name == "strum":
        return ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1), (3, 0.5), (3.5, 0.5)) if bpb == 4 else ((0, 1), (1, 1), (2, 1))
    if name == "arpeggio":
        return tuple((i / 2, 2.0) for i in range(2 * bpb))
    if name == "charleston":
        return ((0, 1.5), (1.5, 2.5)) if bpb == 4 else ((0, 1), (1, 2))
    if name == "stabs":
        return tuple((i + 0.5, 0.35) for i in range(bpb))
    if name == "waltz":
        return ((0, 1), (1, 1), (2, 1)) if bpb == 3 else ((0, 2), (2, 2))
    raise ValueError(f"unknown comping pattern {name!r}")


BASS_PATTERNS = {  # (position in bar, length in beats, chord tone: r root, f fifth, o octave, w walking)
    "root": {4: ((0, 4, "r"),), 3: ((0, 3, "r"),)},
    "root5": {4: ((0, 2, "r"), (2, 2, "f")), 3: ((0, 2, "r"), (2, 1, "f"))},
    "eighths": {4: tuple((i / 2, 0.5, "o" if i == 6 else "r") for i in range(8)),
                3: tuple((i / 2, 0.5, "r") for i in range(6))},
    "offbeat": {4: tuple((i + 0.5, 0.45, "r") for i in range(4))},
    "walking": {4: tuple((i, 1, "r" if i == 0 else "w") for i in range(4)),
                3: tuple((i, 1, "r" if i == 0 else "w") for i in range(3))},
    "funk": {4: ((0, 0.5, "r"), (0.75, 0.25, "o"), (1.5, 0.5, "r"), (2, 0.5, "f"), (2.75, 0.25, "o"),
                 (3.5, 0.5, "r"))},
    "hiphop": {4: ((0, 1.5, "r"), (2.5, 1.0, "r"), (3.5, 0.5, "f"))},
}
