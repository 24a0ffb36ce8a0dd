"""Chord estimation and the chord IOU of section 4.3 / appendix C.

Estimation (``method``):

``chordino`` (used when ``chord-extractor`` is installed; the paper's tool)
    the Chordino Vamp plugin (Mauch & Dixon, 2010) shipped in ``chord-extractor``, called through ``vamp`` on
    the clip resampled to 22.05 kHz (what ``chord_extractor.Chordino.extract`` does after ``librosa.load``)
    with chord-extractor's default parameters. Its change points ``(label, time)`` become segments.
``chroma-template`` (fallback, numpy only)
    STFT chroma (magnitude, ``log(1 + 100 |X| / max |X|)``, 60 Hz - 1 kHz, 93 ms hop) scored by cosine
    against harmonic templates of the 192 chords of the vocabulary (:mod:`arfm.vocab`: each chord tone with
    its first six harmonics, weight 0.8^(h-1)), minus 0.02 per chord tone beyond three, ``N`` for near-silent
    frames, then Viterbi smoothing with a fixed switch penalty. A light stand-in, named as such in every
    result.

Chord IOU. A chord sequence is a list of ``(label, start_s, end_s)`` segments; labels are compared by their
index in the 193-class vocabulary (:func:`arfm.vocab.chord_index`: slash basses dropped, ``N`` for no chord
and for times no segment covers). Over the evaluated span ``[0, D]`` each sequence defines a set of
(time, label) pairs ``A = {(t, a(t))}``, ``B = {(t, b(t))}``; the IOU is the measure of their intersection
over the measure of their union::

    IOU = |A ∩ B| / |A ∪ B| = T_agree / (2 D - T_agree)

with ``T_agree`` the total time both sequences carry the same label (computed exactly on the union of the
two sequences' switch times, no frame grid). Identical sequences give 1, sequences that never agree give 0,
and agreement on half the span gives 1/3. The dataset value is the mean IOU over clips.

``vocab`` compares labels at a coarser level, as the MIREX chord vocabularies do: ``"full"`` (default, the
193 classes), ``"sevenths"`` (maj, min, 7, maj7, min7: 9ths fold to their 7th, 6ths/sus/aug to the triad,
dim/m7b5 to min/min7) or ``"majmin"`` (root + the third). Chordino cannot output 9th chords, so against the
exact labels of a synthetic set that uses them its full-vocabulary IOU is capped; a coarser vocabulary
separates the estimator's limits from the generator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono, resample
from arfm.evaluate.results import MetricResult
from arfm.vocab import N_CHORDS, chord_from_index, chord_index, chord_label, chord_pitch_classes, parse_chord

Segments = list[tuple[str, float, float]]
NO_CHORD_INDEX = N_CHORDS - 1


@dataclass
class ChordEstimate:
    segments: Segments
    method: str


def chordino_available() -> bool:
    try:
        import chord_extractor.extractors  # noqa: F401  (sets VAMP_PATH to the bundled plugin)
        import vamp  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


_SEVENTHS = {"": "", "m": "m", "dim": "m", "aug": "", "7": "7", "maj7": "maj7", "m7": "m7", "m7b5": "m7",
             "dim7": "m", "6": "", "m6": "m", "sus4": "", "sus2": "", "9": "7", "maj9": "maj7", "m9": "m7"}
_MAJMIN = {q: ("m" if r.startswith("m") and not r.startswith("maj") else "") for q, r in _SEVENTHS.items()}
VOCABS = ("full", "sevenths", "majmin")


def label_index(label: str, vocab: str = "full") -> int:
    """Vocabulary index of a chord label (after the ``vocab`` reduction); unparseable labels count as ``N``."""
    try:
        parsed = parse_chord(label)
    except ValueError:
        return NO_CHORD_INDEX
    if parsed is None:
        return NO_CHORD_INDEX
    root, quality = parsed
    if vocab == "sevenths":
        quality = _SEVENTHS[quality]
    elif vocab == "majmin":
        quality = _MAJMIN[quality]
    elif vocab != "full":
        raise ValueError(f"unknown chord vocabulary {vocab!r}: {', '.join(VOCABS)}")
    return chord_index(chord_label(root, quality))


def changes_to_segments(changes: Sequence[tuple[str, float]], duration: float) -> Segments:
    """Chordino-style change points ``[(label, time), ...]`` -> segments; ``N`` before the first change."""
    segs: Segments = []
    pts = sorted(((float(t), str(lab)) for lab, t in changes), key=lambda p: p[0])
    prev_t, prev_l = 0.0, "N"
    for t, lab in pts:
        t = min(max(t, 0.0), duration)
        if t > prev_t:
            segs.append((prev_l, prev_t, t))
        prev_t, prev_l = t, lab
    if duration > prev_t:
        segs.append((prev_l, prev_t, duration))
    return segs


def _label_at(segments: Segments, t: float, vocab: str) -> int:
    for lab, s, e in segments:
        if s <= t < e:
            return label_index(lab, vocab)
    return NO_CHORD_INDEX


def chord_iou(estimated: Segments, reference: Segments, duration: float | None = None, vocab: str = "full") -> float:
    """IOU of the (time, label) sets of two segment sequences over ``[0, duration]`` (see module doc)."""
    if vocab not in VOCABS:
        raise ValueError(f"unknown chord vocabulary {vocab!r}: {', '.join(VOCABS)}")
    if duration is None:
        ends = [e for _, _, e in list(estimated) + list(reference)]
        duration = max(ends) if ends else 0.0
    if duration <= 0:
        raise ValueError("chord_iou needs a positive duration")
    cuts = {0.0, float(duration)}
    for _, s, e in list(estimated) + list(reference):
        for t in (s, e):
            if 0.0 < t < duration:
                cuts.add(float(t))
    grid = sorted(cuts)
    agree = 0.0
    for a, b in zip(grid[:-1], grid[1:]):
        mid = 0.5 * (a + b)
        if _label_at(estimated, mid, vocab) == _label_at(reference, mid, vocab):
            agree += b - a
    return float(agree / (2.0 * duration - agree))


# ----------------------------------------------------------------------------------------- estimators


def _chordino(audio: np.ndarray, sample_rate: int) -> Segments:
    import chord_extractor.extractors as ce  # sets VAMP_PATH before vamp looks for plugins
    import vamp

    sr = 22050
    x = resample(audio, sample_rate, sr)
    out = vamp.collect(x, sr, "nnls-chroma:chordino", parameters=ce.Chordino()._params)
    changes = [(c["label"], float(c["timestamp"])) for c in out.get("list", [])]
    return changes_to_segments(changes, len(x) / sr)


@lru_cache(maxsize=1)
def _harmonic_templates() -> tuple[np.ndarray, np.ndarray]:
    n = N_CHORDS - 1
    t = np.zeros((n, 12), dtype=np.float64)
    sizes = np.zeros(n)
    for i in range(n):
        pcs = chord_pitch_classes(chord_from_index(i))
        sizes[i] = len(pcs)
        for p in pcs:
            for h in range(1, 7):
                t[i, (p + int(round(12 * np.log2(h)))) % 12] += 0.8 ** (h - 1)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return t, sizes


def chroma_frames(audio: np.ndarray, sample_rate: int, sr: int = 22050, n_fft: int = 4096,
                  hop: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-compressed STFT chroma ``[frames, 12]``, frame energy ``[frames]`` and the frame rate."""
    x = resample(audio, sample_rate, sr).astype(np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None], axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = (freqs >= 60.0) & (freqs <= 1000.0)
    midi = 69 + 12 * np.log2(freqs[band] / 440.0)
    pcs = np.mod(np.round(midi).astype(int), 12)
    w = np.clip(1.0 - 2.0 * np.abs(midi - np.round(midi)), 0.0, 1.0)  # favour bins near a semitone centre
    mag = spec[:, band]
    energy = np.sqrt(np.mean(mag ** 2, axis=1))
    comp = np.log1p(100.0 * mag / (mag.max() + 1e-12)) * w[None]
    chroma = np.zeros((n_frames, 12))
    for pc in range(12):
        chroma[:, pc] = comp[:, pcs == pc].sum(axis=1)
    return chroma, energy, sr / hop


def _template(audio: np.ndarray, sample_rate: int, switch_penalty: float = 0.6, temperature: float = 0.05,
              silence_db: float = -50.0) -> Segments:
    chroma, energy, fps = chroma_frames(audio, sample_rate)
    duration = len(as_mono(audio)) / sample_rate
    if len(chroma) == 0:
        return [("N", 0.0, duration)]
    t, sizes = _harmonic_templates()
    norm = chroma / np.maximum(np.linalg.norm(chroma, axis=1, keepdims=True), 1e-12)
    score = norm @ t.T - 0.02 * (sizes[None] - 3)  # a slight preference for triads over their extensions
    loud = 20 * np.log10(energy / (energy.max() + 1e-12) + 1e-12) > silence_db
    n_score = np.where(loud, score.max(axis=1) - 0.2, score.max(axis=1) + 1.0)
    emit = np.concatenate([score, n_score[:, None]], axis=1) / temperature  # [T, 193], N last
    # Viterbi with a uniform switch penalty: stay free, switch to any chord costs `switch_penalty / temperature`
    pen = switch_penalty / temperature
    delta = emit[0].copy()
    back = np.zeros(emit.shape, dtype=np.int64)
    for i in range(1, len(emit)):
        best = int(np.argmax(delta))
        switch = delta[best] - pen
        stay_better = delta >= switch
        back[i] = np.where(stay_better, np.arange(emit.shape[1]), best)
        delta = np.where(stay_better, delta, switch) + emit[i]
    path = np.zeros(len(emit), dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for i in range(len(emit) - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    hop_s = 1.0 / fps
    changes = []
    for i, k in enumerate(path):
        if i == 0 or k != path[i - 1]:
            lab = "N" if k == N_CHORDS - 1 else chord_from_index(int(k))
            changes.append((lab, 0.0 if i == 0 else i * hop_s + 0.5 * hop_s))
    return changes_to_segments(changes, duration)


def estimate_chords(audio: Any, sample_rate: int, method: str = "auto") -> ChordEstimate:
    """Chord segments of one clip; ``method`` is ``auto`` (Chordino when installed), ``chordino`` or
    ``chroma-template``."""
    x = as_mono(audio)
    if method == "auto":
        method = "chordino" if chordino_available() else "chroma-template"
    if method == "chordino":
        return ChordEstimate(_chordino(x, sample_rate), "chordino")
    if method == "chroma-template":
        return ChordEstimate(_template(x, sample_rate), "chroma-template")
    raise ValueError(f"unknown chord method {method!r}: auto, chordino or chroma-template")


def chord_iou_metric(generated: Sequence[Any], references: Sequence[Any], sample_rate: int,
                     method: str = "auto", vocab: str = "full") -> MetricResult:
    """Mean chord IOU of generated clips against references.

    Each reference is either a segment list (exact labels, e.g. the synthetic data's ``labels["chords"]``) or
    audio (its chords are then estimated with the same method). The span is the generated clip's duration.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated clips but {len(references)} references")
    if method == "auto":
        method = "chordino" if chordino_available() else "chroma-template"
    values: list[float | None] = []
    for gen, ref in zip(generated, references):
        g = as_mono(gen)
        duration = len(g) / sample_rate
        if ref is None or duration <= 0:
            values.append(None)
            continue
        est = estimate_chords(g, sample_rate, method).segments
        if _is_segments(ref):
            ref_segs = [(str(lab), float(s), float(e)) for lab, s, e in ref]
        else:
            ref_segs = estimate_chords(ref, sample_rate, method).segments
        values.append(chord_iou(est, ref_segs, duration, vocab=vocab))
    return MetricResult.from_samples("chord_iou", values, method if vocab == "full" else f"{method} ({vocab})",
                                     vocab=vocab)


def _is_segments(ref: Any) -> bool:
    if isinstance(ref, np.ndarray) or hasattr(ref, "detach"):
        return False
    return len(ref) == 0 or (isinstance(ref[0], (list, tuple)) and len(ref[0]) == 3 and isinstance(ref[0][0], str))
