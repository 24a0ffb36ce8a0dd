"""Fixtures for the metric tests: clips rendered from known labels (chords, melody, beats, downbeats).

``render_clip`` is a small numpy renderer (additive-synth chord pad and bass, a lead line, kick/snare/hat
drums) so estimators can be scored against exact labels. When the data engineer's ``arfm.data.synth`` exists
its clips are used instead (see ``synth_clips``).
"""

from __future__ import annotations

import numpy as np
import pytest

from arfm.vocab import chord_pitch_classes, parse_chord

SR = 32000


def _tone(freq: float, n: int, sr: int, partials: int = 6, decay: float = 0.0) -> np.ndarray:
    t = np.arange(n) / sr
    x = sum((0.7 ** (k - 1)) * np.sin(2 * np.pi * freq * k * t) for k in range(1, partials + 1) if freq * k < sr / 2)
    env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (n / sr - t) / 0.02)
    if decay:
        env = env * np.exp(-t * decay)
    return np.asarray(x * env)


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _kick(n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f = 50 + 100 * np.exp(-t * 40)
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 18)


def _noise(n: int, sr: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    return rng.standard_normal(n) * np.exp(-t * decay)


def render_clip(chords: list[str], tempo: float = 120.0, beats_per_bar: int = 4, bars_per_chord: int = 1,
                seconds: float | None = None, sr: int = SR, seed: int = 0, offset: float = 0.0,
                drums: bool = True, melody: bool = True) -> tuple[np.ndarray, dict]:
    """Render a clip; returns ``(audio float32[S], labels)`` with labels in the manifest's format."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / tempo
    bar = beat * beats_per_bar
    n_bars = len(chords) * bars_per_chord
    total = seconds if seconds is not None else offset + n_bars * bar
    x = np.zeros(int(round(total * sr)) + sr, dtype=np.float64)
    labels = {"chords": [], "melody": [], "beats": [], "downbeats": [], "tempo": tempo,
              "time_signature": [beats_per_bar, 4]}
    for ci, name in enumerate(chords):
        start = offset + ci * bars_per_chord * bar
        end = min(start + bars_per_chord * bar, total)
        if start >= total:
            break
        labels["chords"].append([name, round(start, 6), round(end, 6)])
        root, _ = parse_chord(name)
        n0, n1 = int(start * sr), int(end * sr)
        for pc in chord_pitch_classes(name):
            m = 60 + ((pc - root) % 12) + (root if root < 6 else root - 12)  # close voicing around C4
            x[n0:n1] += 0.12 * _tone(_midi_hz(m), n1 - n0, sr)
        # bass on every beat
        for b in range(bars_per_chord * beats_per_bar):
            bs = start + b * beat
            if bs >= end:
                break
            k0 = int(bs * sr)
            k1 = min(int((bs + 0.9 * beat) * sr), n1)
            x[k0:k1] += 0.18 * _tone(_midi_hz(36 + root), k1 - k0, sr, partials=4, decay=3.0)
        if melody:
            pcs = chord_pitch_classes(name)
            for b in range(bars_per_chord * beats_per_bar):
                ms = start + b * beat
                if ms >= end:
                    break
                pc = pcs[int(rng.integers(len(pcs)))]
                note = 72 + ((pc - 0) % 12)
                k0, k1 = int(ms * sr), min(int((ms + 0.95 * beat) * sr), n1)
                x[k0:k1] += 0.08 * _tone(_midi_hz(note), k1 - k0, sr, partials=3)
                labels["melody"].append([int(note), round(ms, 6), round(ms + 0.95 * beat, 6)])
    t = offset
    i = 0
    while t < total - 1e-9:
        labels["beats"].append(round(t, 6))
        if i % beats_per_bar == 0:
            labels["downbeats"].append(round(t, 6))
        if drums:
            k0 = int(t * sr)
            if i % beats_per_bar == 0 or (beats_per_bar == 4 and i % beats_per_bar == 2):
                seg = _kick(int(0.3 * sr), sr)
                x[k0:k0 + len(seg)] += 0.6 * seg[: len(x) - k0]
            if beats_per_bar == 4 and i % 2 == 1:
                seg = _noise(int(0.2 * sr), sr, 25.0, rng)
                x[k0:k0 + len(seg)] += 0.25 * seg[: len(x) - k0]
            for h in (0.0, 0.5):
                k = int((t + h * beat) * sr)
                seg = np.diff(_noise(int(0.05 * sr), sr, 90.0, rng), prepend=0.0)
                x[k:k + len(seg)] += 0.08 * seg[: max(0, len(x) - k)]
        t += beat
        i += 1
    x = x[: int(round(total * sr))]
    x = 0.9 * x / (np.abs(x).max() + 1e-9)
    return x.astype(np.float32), labels


PROGRESSIONS = [
    ["C", "G", "Am", "F", "C"],
    ["Dm", "Bb", "F", "C", "Dm"],
    ["E", "A", "B", "C#m", "E"],
    ["Gm", "Eb", "Bb", "F", "Gm"],
]


@pytest.fixture(scope="session")
def labelled_clips():
    """Four 10 s clips at 32 kHz, 120 bpm 4/4, one chord per bar, with exact labels."""
    return [render_clip(p, seed=i) for i, p in enumerate(PROGRESSIONS)]


@pytest.fixture(scope="session")
def render():
    """The renderer itself (test modules cannot import conftest under --import-mode=importlib)."""
    return render_clip


@pytest.fixture(scope="session")
def sr():
    return SR


SYNTH_SEED, SYNTH_N, SYNTH_SECONDS = 3, 6, 8.0


@pytest.fixture(scope="session")
def synth_clips():
    """``[(audio, labels)]``: clips of the project's synthetic corpus (``arfm.data.synth``, seed 3, 6 x 8 s,
    several genres, 3/4 and 4/4, sevenths and inversions), or this file's renderer when that module is absent."""
    try:
        from arfm.data.synth import generate_clip
    except ImportError:
        return [render_clip(p, seed=i) for i, p in enumerate(PROGRESSIONS)]
    clips = [generate_clip(seed=SYNTH_SEED, index=i, seconds=SYNTH_SECONDS) for i in range(SYNTH_N)]
    return [(c.audio, c.labels) for c in clips]


CORPUS_SECONDS = 1.5


@pytest.fixture(scope="session")
def two_clip_corpus(tmp_path_factory, labelled_corpus):
    """A dataset folder with two labelled clips of the synthetic corpus, both in the valid split."""
    return labelled_corpus(tmp_path_factory.mktemp("corpus"), 2, seconds=CORPUS_SECONDS)


@pytest.fixture(scope="session")
def corpus_with_train(tmp_path_factory, labelled_corpus):
    """Two valid clips (the prompts) and three train clips (FAD's real set)."""
    return labelled_corpus(tmp_path_factory.mktemp("corpus5"), 2, 3, seed=9, seconds=CORPUS_SECONDS)
