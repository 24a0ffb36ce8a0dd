"""Music theory and arrangement for the synthetic dataset: a random song sketch with exact ground truth.

:func:`compose` draws a style (genre), key, mode, tempo, metre, a diatonic chord progression coloured with
sevenths, sixths and inversions, a motif-based melody, bass and comping parts and a drum pattern, all on one
beat grid. Every chord is one of Chordino's (:data:`arfm.vocab.CHORD_TYPES`, the classes of the chord control),
so Chordino can in principle recover every chord of the corpus: a slash chord's bass part plays its bass note. Times are in seconds of the clip; the song starts before the clip (a random cut), so the
first beat falls anywhere in the first bar. Nothing here makes sound: :mod:`arfm.data.synth_render` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from arfm.data.synth_patterns import BASS_PATTERNS, CELLS, DRUMS, comp_pattern
from arfm.vocab import CHORD_TYPES, MELODY_LOW_MIDI, N_MELODY_NOTES, PITCH_CLASSES, chord_label

MELODY_HIGH_MIDI = MELODY_LOW_MIDI + N_MELODY_NOTES - 1  # B6 (95)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# diatonic chord types per degree (Chordino's types, arfm.vocab.CHORD_TYPES): (triad, seventh)
MAJOR_QUALITIES = (("", "maj7"), ("m", "m7"), ("m", "m7"), ("", "maj7"), ("", "7"), ("m", "m7"), ("dim", "m7b5"))
MINOR_QUALITIES = (("m", "m7"), ("dim", "m7b5"), ("", "maj7"), ("m", "m7"), ("m", "m7"), ("", "maj7"), ("", "7"))
# slash chords of a major triad and how often each is drawn: first and second inversion, the triad over its
# flat seventh and over its second (Chordino's "/3", "/5", "/b7", "/2")
TRIAD_INVERSIONS = (("/3", 0.4), ("/5", 0.3), ("/b7", 0.2), ("/2", 0.1))

MAJOR_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 4, 3), (5, 3, 0, 4), (0, 2, 3, 4),
                      (0, 3, 0, 4), (0, 5, 1, 4), (3, 4, 2, 5), (0, 1, 3, 4), (0, 3, 6, 2, 5, 1, 4, 0))
MINOR_PROGRESSIONS = ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 3, 0, 4),
                      (5, 6, 0, 0), (1, 4, 0, 0), (0, 3, 6, 2, 5, 1, 4, 0))


@dataclass(frozen=True)
class Style:
    """A genre-like family: tempo range, metres, palettes and how much colour the harmony gets."""

    words: tuple[str, ...]
    tempo: tuple[int, int]
    meters: tuple[int, ...]
    comp: tuple[str, ...]
    pad: tuple[str | None, ...]
    bass: tuple[str, ...]
    lead: tuple[str, ...]
    drums: tuple[str, ...]
    kit: str
    comp_patterns: tuple[str, ...]
    bass_patterns: tuple[str, ...]
    p7: float = 0.1  # seventh chords
    pinv: float = 0.05  # slash chords (inversions) of major triads and dominant sevenths
    p6: float = 0.0
    swing: tuple[float, float] = (0.5, 0.5)
    reverb: tuple[float, float] = (0.12, 0.25)
    minor_bias: float = 0.5
    lofi: bool = False


STYLES: dict[str, Style] = {
    "pop": Style(("pop", "upbeat pop", "indie pop", "radio-friendly pop"), (92, 128), (4, 4, 4, 3),
                 ("piano", "electric piano", "acoustic guitar"), ("synth pad", "strings", None),
                 ("electric bass", "synth bass"), ("synth lead", "flute", "whistle", "vibraphone"),
                 ("pop",), "acoustic", ("quarters", "halves", "arpeggio"), ("root5", "eighths", "root"),
                 p7=0.15, pinv=0.15, p6=0.05, minor_bias=0.35),
    "rock": Style(("rock", "indie rock", "classic rock", "garage rock"), (104, 150), (4,),
                  ("electric guitar", "organ", "piano"), (None, None, "organ"), ("electric bass",),
                  ("lead guitar", "synth lead", "saxophone"), ("rock",), "acoustic",
                  ("strum", "quarters", "eighths"), ("eighths", "root5"), p7=0.05, pinv=0.1, minor_bias=0.45),
    "jazz": Style(("jazz", "smooth jazz", "cool jazz", "swing jazz"), (92, 160), (4, 4, 3),
                  ("piano", "electric piano"), (None, None, "strings"), ("upright bass",),
                  ("trumpet", "clarinet", "vibraphone", "saxophone", "flute"), ("jazz",), "brush",
                  ("charleston", "halves"), ("walking",), p7=1.0, p6=0.1, swing=(0.6, 0.67),
                  reverb=(0.15, 0.3), minor_bias=0.4),
    "lofi": Style(("lo-fi hip hop", "chillhop", "lofi beat", "lo-fi"), (70, 90), (4,),
                  ("electric piano", "piano", "acoustic guitar"), ("synth pad", None),
                  ("electric bass", "sub bass", "upright bass"), ("flute", "bell", "vibraphone", "whistle"),
                  ("hiphop",), "lofi", ("halves", "sustain", "arpeggio"), ("root", "hiphop"), p7=0.95,
                  swing=(0.55, 0.62), reverb=(0.15, 0.3), minor_bias=0.55, lofi=True),
    "house": Style(("house", "deep house", "dance", "electronic dance"), (118, 128), (4,),
                   ("electric piano", "organ", "synth pluck"), ("synth pad",), ("synth bass",),
                   ("synth lead", "bell", "square lead"), ("four",), "electronic", ("stabs", "arpeggio"),
                   ("offbeat",), p7=0.55, minor_bias=0.55),
    "synthwave": Style(("synthwave", "retro 80s synth", "outrun", "synth-pop"), (84, 118), (4,),
                       ("synth pluck", "electric piano"), ("synth pad", "strings"), ("synth bass",),
                       ("synth lead", "square lead"), ("rock",), "electronic", ("arpeggio", "quarters"),
                       ("eighths",), p7=0.3, pinv=0.1, minor_bias=0.65),
    "folk": Style(("folk", "acoustic folk", "americana", "singer-songwriter"), (78, 120), (4, 3),
                  ("acoustic guitar", "piano", "harp"), (None, "strings"), ("upright bass", "electric bass"),
                  ("flute", "violin", "whistle", "clarinet"), ("folk",), "acoustic", ("strum", "arpeggio"),
                  ("root5", "root"), p7=0.1, pinv=0.2, minor_bias=0.4),
    "funk": Style(("funk", "groovy funk", "disco funk", "neo-soul"), (96, 116), (4,),
                  ("electric piano", "clavinet", "electric guitar"), (None, "synth pad"),
                  ("synth bass", "electric bass"), ("trumpet", "synth lead", "saxophone"), ("funk",),
                  "acoustic", ("quarters", "stabs"), ("funk",), p7=1.0, minor_bias=0.5),
    "cinematic": Style(("cinematic", "orchestral", "epic soundtrack", "film score"), (66, 96), (4, 3),
                       ("piano", "harp"), ("strings",), ("upright bass", "synth bass"),
                       ("violin", "flute", "trumpet", "clarinet"), ("ballad",), "orchestral",
                       ("arpeggio", "sustain"), ("root",), p7=0.15, pinv=0.2, reverb=(0.25, 0.4), minor_bias=0.6),
    "ambient": Style(("ambient", "chillout", "downtempo", "dreamy ambient"), (64, 86), (4,),
                     ("electric piano", "harp"), ("synth pad",), ("sub bass", "synth bass"),
                     ("bell", "flute", "vibraphone"), ("ballad",), "electronic", ("arpeggio", "sustain"),
                     ("root",), p7=0.7, pinv=0.2, reverb=(0.3, 0.45), minor_bias=0.5),
    "waltz": Style(("waltz", "classical waltz", "ballroom waltz", "viennese waltz"), (84, 150), (3,),
                   ("piano", "acoustic guitar", "harp"), ("strings", None), ("upright bass",),
                   ("violin", "flute", "clarinet"), ("waltz",), "orchestral", ("waltz",), ("root",), p7=0.3,
                   reverb=(0.2, 0.35), minor_bias=0.45),
}

LEAD_REGISTER = {  # lowest and highest MIDI note of the melody for each lead instrument
    "synth lead": (64, 82), "square lead": (62, 80), "flute": (69, 88), "whistle": (74, 91),
    "vibraphone": (65, 84), "bell": (72, 91), "trumpet": (62, 79), "clarinet": (60, 79),
    "saxophone": (61, 79), "violin": (67, 88), "lead guitar": (62, 81),
}
# comping instruments centre their voicings near this MIDI note
COMP_CENTRE = {"piano": 60, "electric piano": 60, "acoustic guitar": 58, "electric guitar": 57, "organ": 60,
               "synth pluck": 62, "clavinet": 62, "harp": 64, "synth pad": 57, "strings": 58}


@dataclass
class Note:
    start: float
    dur: float
    midi: int
    vel: float


@dataclass
class Hit:
    time: float
    kind: str
    vel: float


@dataclass
class Arrangement:
    """A song sketch: every event the renderer plays, and the ground truth it implies."""

    seconds: float
    genre: str
    style_word: str
    key: int
    mode: str
    tempo: float
    beats_per_bar: int
    swing: float
    instruments: dict[str, str]  # role (comp, pad, bass, lead, drums) -> instrument name
    tracks: dict[str, list[Note]]  # role -> notes
    drums: list[Hit]
    kit: str
    reverb: float
    lofi: bool
    chords: list[tuple[str, float, float]] = field(default_factory=list)  # clipped to [0, seconds]
    melody: list[tuple[int, float, float]] = field(default_factory=list)
    beats: list[float] = field(default_factory=list)
    downbeats: list[float] = field(default_factory=list)
    mood: str = ""


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


class _Grid:
    """Beat positions (in beats from the song's first downbeat) to clip seconds, with optional swing."""

    def __init__(self, origin: float, tempo: float, swing: float):
        self.origin, self.period, self.swing = origin, 60.0 / tempo, swing

    def time(self, beat: float) -> float:
        whole = math.floor(beat)
        frac = beat - whole
        s = self.swing
        f = frac * 2 * s if frac <= 0.5 else s + (frac - 0.5) * 2 * (1 - s)
        return self.origin + (whole + f) * self.period


def _chord_quality(rng, style: Style, mode: str, degree: int) -> str:
    """A chord type of :data:`arfm.vocab.CHORD_TYPES` for a scale degree."""
    triad, seventh = (MAJOR_QUALITIES if mode == "major" else MINOR_QUALITIES)[degree]
    if rng.random() < style.p7:
        if seventh == "7" and rng.random() < style.pinv:
            return "7/3"
        if seventh == "m7b5" and rng.random() < style.pinv:
            return "m7b5/b7"
        return seventh
    if triad in ("", "m") and rng.random() < style.p6:
        return "6" if triad == "" else "m6"
    if triad == "" and rng.random() < style.pinv:
        names, weights = zip(*TRIAD_INVERSIONS)
        return names[int(rng.choice(len(names), p=np.array(weights) / sum(weights)))]
    return triad


def _progression(rng, style: Style, key: int, mode: str) -> list[tuple[int, str]]:
    """(root pitch class, quality) per chord of one cycle of the progression."""
    degrees = _pick(rng, MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS)
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    out = []
    for i, d in enumerate(degrees):
        q = _chord_quality(rng, style, mode, d)
        if mode == "minor" and d == 4 and rng.random() < 0.6:  # harmonic-minor dominant
            q = "7" if q == "m7" else ""
        if mode == "minor" and d == 6 and style.words[0] in ("cinematic", "waltz") and rng.random() < 0.3:
            out.append(((key + 7) % 12, "7/3"))  # the dominant seventh over the leading tone instead of VII
            continue
        if mode == "minor" and d == 2 and style.words[0] == "cinematic" and rng.random() < 0.15:
            q = "aug"
        out.append(((key + scale[d]) % 12, q))
    return out


def _voicing(pcs: tuple[int, ...], centre: float, prev: list[int] | None) -> list[int]:
    """Close voicing of ``pcs`` (root first in ``pcs``) near ``centre``; smooth voice leading from ``prev``."""
    best, best_cost = None, math.inf
    n = len(pcs)
    for inv in range(n):
        order = pcs[inv:] + pcs[:inv]
        notes = [order[0]]
        for pc in order[1:]:
            m = notes[-1] + ((pc - notes[-1]) % 12 or 12)
            notes.append(m)
        mean = sum(notes) / n
        shift = round((centre - mean) / 12) * 12
        notes = [m + shift for m in notes]
        cost = abs(sum(notes) / n - centre)
        if prev:
            cost = 0.5 * cost + sum(min(abs(m - p) for p in prev) for m in notes) / n
        if cost < best_cost:
            best, best_cost = notes, cost
    return best


def _chord_pcs(root: int, quality: str) -> tuple[int, ...]:
    """Chord tones root first, in the type's interval order (not sorted); a slash chord's bass is not one of
    them unless it is a chord tone (``C/D`` -> C, E, G; the bass part plays the D)."""
    seen, out = set(), []
    for iv in CHORD_TYPES[quality].intervals:
        pc = (root + iv) % 12
        if pc not in seen:
            seen.add(pc)
            out.append(pc)
    return tuple(out)


def _scale_pool(scale_pcs: set[int], chord_pcs: tuple[int, ...]) -> tuple[int, ...]:
    """Passing-tone pool over a chord: the scale, with tones a semitone from a chromatic chord tone removed."""
    chord = set(chord_pcs)
    chromatic = chord - scale_pcs
    pool = {p for p in scale_pcs if not any((p - c) % 12 in (1, 11) for c in chromatic)} | chord
    return tuple(sorted(pool))


def _split(start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Cut [start, end) at multiples of ``step`` (chord boundaries)."""
    out, s = [], start
    while s < end - 1e-9:
        nxt = min(end, (math.floor(s / step + 1e-9) + 1) * step)
        out.append((s, nxt))
        s = nxt
    return out


def _melody(rng, grid: _Grid, chord_at, chord_beats: float, n_bars: int, bpb: int, lo: int, hi: int) -> list[Note]:
    cells = CELLS[bpb]
    a, b, c = (cells[int(i)] for i in rng.choice(len(cells), 3, replace=False))
    pattern = _pick(rng, ((a, b, a, c), (a, a, b, a), (a, b, a, b), (a, b, c, a)))
    centre = (lo + hi) / 2
    prev = int(round(centre)) + int(rng.integers(-3, 4))
    legato = rng.uniform(0.82, 0.95)
    notes: list[Note] = []
    for bar in range(n_bars):
        pos = 0.0
        for d in pattern[bar % 4]:
            onset, pos = bar * bpb + pos, pos + abs(d)
            if d < 0:
                continue
            for k, (s0, s1) in enumerate(_split(onset, onset + d, chord_beats)):
                if k and s1 - s0 < 0.5:
                    break  # a sliver after a chord change: end the note at the change instead
                pcs, pool = chord_at(s0)
                strong = abs(s0 - round(s0)) < 1e-9
                # chord changes and long notes always take chord tones; passing tones only on short notes
                must = abs(s0 / chord_beats - round(s0 / chord_beats)) < 1e-9 or s1 - s0 >= 1
                allowed = pcs if must or (strong and rng.random() < 0.85) or rng.random() < 0.35 else pool
                cand = np.array([m for m in range(lo, hi + 1) if m % 12 in allowed])
                dist = np.abs(cand - prev)
                w = np.exp(-dist / 2.5) * np.exp(-np.abs(cand - centre) / 8.0)
                w[dist == 0] *= 0.35
                if rng.random() < 0.12:  # an occasional leap
                    w = np.exp(-np.abs(dist - 6) / 2.0)
                m = int(rng.choice(cand, p=w / w.sum()))
                t0, t1 = grid.time(s0), grid.time(s1)
                vel = 0.82 + (0.12 if s0 % bpb == 0 else 0.0) + rng.uniform(-0.05, 0.05)
                notes.append(Note(t0, max(0.06, (t1 - t0) * legato), m, vel))
                prev = m
    return notes


def _mood(rng, mode: str, tempo: float) -> str:
    if mode == "major":
        words = (("happy", "uplifting", "bright", "cheerful", "joyful", "energetic") if tempo >= 108
                 else ("warm", "peaceful", "relaxed", "tender", "hopeful", "gentle"))
    else:
        words = (("dark", "tense", "driving", "intense", "brooding", "urgent") if tempo >= 108
                 else ("melancholic", "moody", "wistful", "introspective", "sad", "nostalgic"))
    return _pick(rng, words)


KIT_NAMES = {"acoustic": "drums", "electronic": "drum machine", "brush": "brushed drums", "lofi": "dusty drums",
             "orchestral": "orchestral percussion"}


def compose(rng: np.random.Generator, seconds: float, genre: str | None = None) -> Arrangement:
    """Draw one song sketch of ``seconds`` with ``rng`` (all randomness comes from it)."""
    genre = genre or _pick(rng, tuple(STYLES))
    if genre not in STYLES:
        raise ValueError(f"unknown genre {genre!r}; choose one of {', '.join(STYLES)}")
    st = STYLES[genre]
    bpb = int(_pick(rng, st.meters))
    tempo = float(rng.integers(st.tempo[0], st.tempo[1] + 1))
    mode = "minor" if rng.random() < st.minor_bias else "major"
    key = int(rng.integers(12))
    swing = float(rng.uniform(*st.swing))
    period = 60.0 / tempo
    options = [(bpb / 2, 0.3)] if bpb == 4 else []
    options += [(bpb, 0.5), (2 * bpb, 0.2)]
    valid = [(b, w) for b, w in options if 1.2 <= b * period <= 5.0] or [(bpb, 1.0)]
    weights = np.array([w for _, w in valid])
    chord_beats = float(valid[int(rng.choice(len(valid), p=weights / weights.sum()))][0])
    origin = -(int(rng.integers(bpb)) * period + rng.uniform(0, period))  # a random cut of the song
    grid = _Grid(origin, tempo, swing)
    n_beats = math.ceil((seconds - origin) / period) + 1
    n_bars = math.ceil(n_beats / bpb)
    total_beats = n_bars * bpb

    prog = _progression(rng, st, key, mode)
    scale = {(key + s) % 12 for s in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)}
    n_chords = math.ceil(total_beats / chord_beats)
    spans = [(i * chord_beats, (i + 1) * chord_beats, *prog[i % len(prog)]) for i in range(n_chords)]

    def chord_at(beat: float):
        root, q = spans[min(int(beat // chord_beats), n_chords - 1)][2:]
        pcs = _chord_pcs(root, q)
        return pcs, _scale_pool(scale, pcs)

    lead = _pick(rng, st.lead)
    comp = _pick(rng, [c for c in st.comp if c != lead] or st.comp)
    pad = _pick(rng, st.pad)
    bass = _pick(rng, st.bass)
    comp_style = _pick(rng, st.comp_patterns)
    if comp == "organ" and comp_style in ("strum", "arpeggio", "eighths"):
        comp_style = "halves"
    bass_pattern = _pick(rng, [p for p in st.bass_patterns if bpb in BASS_PATTERNS[p]] or ["root"])
    lo, hi = LEAD_REGISTER[lead]
    lo, hi = max(lo, MELODY_LOW_MIDI), min(hi, MELODY_HIGH_MIDI)

    tracks: dict[str, list[Note]] = {"lead": _melody(rng, grid, chord_at, chord_beats, n_bars, bpb, lo, hi),
                                     "comp": [], "bass": []}
    if pad:
        tracks["pad"] = []
    centre = COMP_CENTRE.get(comp, 60) + rng.uniform(-2, 2)
    prev_voicing = None
    pattern = comp_pattern(comp_style, bpb)
    bass_pat = BASS_PATTERNS[bass_pattern][bpb]
    for s0, s1, root, q in spans:
        pcs = _chord_pcs(root, q)
        voicing = _voicing(pcs, centre, prev_voicing)
        prev_voicing = voicing
        if pad:
            pad_notes = _voicing(pcs, COMP_CENTRE[pad] + 2, None)
            t0, t1 = grid.time(s0), grid.time(s1)
            tracks["pad"] += [Note(t0, t1 - t0, m, 0.7) for m in pad_notes]
        bars = range(int(s0 // bpb), int(math.ceil(s1 / bpb)))
        arp = sorted(voicing) + [min(voicing) + 12]
        for bar in bars:
            for j, (pos, length) in enumerate(pattern):
                b0 = bar * bpb + pos
                if not s0 <= b0 < s1:
                    continue
                b1 = min(b0 + length, s1)
                t0, t1 = grid.time(b0), grid.time(b1)
                accent = 1.0 if b0 % bpb == 0 else 0.85 if b0 == int(b0) else 0.7
                vel = accent * rng.uniform(0.9, 1.0)
                gate = (t1 - t0) * (0.95 if length >= 1 else 0.8)
                if comp_style == "arpeggio":
                    tracks["comp"].append(Note(t0, gate, arp[j % len(arp)], vel))
                else:
                    spread = 0.012 if comp_style == "strum" else 0.0
                    order = voicing if (comp_style != "strum" or j % 2 == 0) else voicing[::-1]
                    for i, m in enumerate(order):
                        tracks["comp"].append(Note(t0 + i * spread, max(0.05, gate - i * spread), m, vel))
            root_m = 33 + (root - 9) % 12
            slash = CHORD_TYPES[q].bass
            for pos, length, tone in bass_pat:
                b0 = bar * bpb + pos
                if not s0 <= b0 < s1:
                    continue
                t0, t1 = grid.time(b0), grid.time(min(b0 + length, s1))
                if slash:  # a slash chord: the bass holds its bass note (its octave where the pattern leaps)
                    m = 33 + (root + slash - 9) % 12 + (12 if tone == "o" else 0)
                elif tone == "r":
                    m = root_m
                elif tone == "f":
                    m = root_m + (pcs[2] - root) % 12
                elif tone == "o":
                    m = root_m + 12
                else:
                    m = root_m + (int(_pick(rng, pcs[1:])) - root) % 12
                vel = (1.0 if b0 % bpb == 0 else 0.85) * rng.uniform(0.9, 1.0)
                tracks["bass"].append(Note(t0, (t1 - t0) * 0.9, m, vel))

    drums: list[Hit] = []
    pattern_d = DRUMS[_pick(rng, st.drums)]
    bar_pattern = pattern_d.get(bpb) or pattern_d[max(pattern_d)]
    for bar in range(n_bars):
        if bar % 4 == 0 and st.kit != "lofi":
            drums.append(Hit(grid.time(bar * bpb), "crash", 0.55))
        for kind, hits in bar_pattern.items():
            for pos, vel in hits:
                if pos < bpb:  # downbeats accented: everything else a little softer
                    vel = 1.0 if pos == 0 and kind == "kick" else 0.8 * vel
                    drums.append(Hit(grid.time(bar * bpb + pos), kind, vel * rng.uniform(0.92, 1.0)))

    arr = Arrangement(
        seconds=seconds, genre=genre, style_word=_pick(rng, st.words), key=key, mode=mode, tempo=tempo,
        beats_per_bar=bpb, swing=swing,
        instruments={"comp": comp, **({"pad": pad} if pad else {}), "bass": bass, "lead": lead,
                     "drums": KIT_NAMES[st.kit]},
        tracks=tracks, drums=drums, kit=st.kit, reverb=float(rng.uniform(*st.reverb)), lofi=st.lofi,
        mood=_mood(rng, mode, tempo))

    # ground truth, clipped to the clip
    merged: list[list] = []
    for s0, s1, root, q in spans:
        t0, t1 = max(0.0, grid.time(s0)), min(seconds, grid.time(s1))
        if t1 <= t0:
            continue
        label = chord_label(root, q)
        if merged and merged[-1][0] == label:
            merged[-1][2] = t1
        else:
            merged.append([label, t0, t1])
    arr.chords = [(lab, round(a, 6), round(b, 6)) for lab, a, b in merged]
    arr.melody = [(n.midi, round(max(0.0, n.start), 6), round(min(seconds, n.start + n.dur), 6))
                  for n in tracks["lead"] if n.start + n.dur > 0 and n.start < seconds]
    for b in range(total_beats):
        t = grid.time(b)
        if 0 <= t < seconds:
            arr.beats.append(round(t, 6))
            if b % bpb == 0:
                arr.downbeats.append(round(t, 6))
    return arr


def key_name(key: int) -> str:
    return PITCH_CLASSES[key % 12]
