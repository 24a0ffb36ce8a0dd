"""Chord estimation and the chord IOU of section 4.3 / appendix C.

Estimation (``method``):

``chordino`` (used when ``chord-extractor`` imports; the paper's tool; otherwise the result says why not)
    the Chordino Vamp plugin (Mauch & Dixon, 2010) shipped in ``chord-extractor``, called through ``vamp`` on
    the clip resampled to 22.05 kHz (what ``chord_extractor.Chordino.extract`` does after ``librosa.load``)
    with chord-extractor's default parameters. Its change points ``(label, time)`` become segments.
``chroma-template`` (fallback, numpy only)
    STFT chroma (magnitude, ``log(1 + 100 |X| / max |X|)``, 60 Hz - 1 kHz, 93 ms hop) scored by cosine
    against harmonic templates of the 192 chords of the vocabulary (:mod:`arfm.vocab`: each sounding pitch
    class with its first six harmonics, weight 0.8^(h-1)), minus 0.02 per pitch class beyond three and 0.001
    for a slash chord (it has no bass chroma, so ``C/E`` ties with ``C`` and the root position wins), ``N``
    for near-silent frames, then Viterbi smoothing with a fixed switch penalty. A light stand-in, named as
    such in every result.

Chord IOU. A chord sequence is a list of ``(label, start_s, end_s)`` segments in Chordino's spelling (``C``,
``Am``, ``G/B``, ``Ebm7b5``: :mod:`arfm.vocab`; other common qualities such as ``sus4`` or ``9`` are read too,
a label that cannot be read becomes ``X``, which mir_eval leaves out); both sequences are converted to Harte syntax (``C:maj``,
``A:min``, ``G:maj/3``, ``Eb:hdim7``), cut or padded with ``N`` to the evaluated span ``[0, D]``, and compared
segment by segment with ``mir_eval.chord`` (Raffel et al., 2014): ``mir_eval.util.merge_labeled_intervals``,
one of mir_eval's comparison rules (``vocab``), and ``mir_eval.chord.weighted_accuracy``, the
duration-weighted accuracy ``A = T_agree / T`` of the MIREX chord evaluation, where ``T`` is the time whose
reference chord the rule can judge (the rule's out-of-vocabulary reference chords are left out, as in MIREX)
and ``T_agree`` the part of it where the labels match under the rule.

Seen as sets of (time, label) pairs over ``T``, the two sequences intersect in ``T_agree`` and their union
is ``2 T - T_agree``, so the IOU is a monotone function of the weighted accuracy::

    IOU = T_agree / (2 T - T_agree) = A / (2 - A)

Identical sequences give 1, sequences that never agree 0, agreement on half the span 1/3. When no reference
time can be judged the IOU is undefined (``None``). The dataset value is the mean over clips.

``vocab`` is the mir_eval rule: ``"tetrads"`` (default: root and full quality, bass ignored; Chordino's
vocabulary; mir_eval counts a 9th chord as its 7th), ``"sevenths"`` and ``"majmin"`` (the MIREX vocabularies:
maj/min/7/maj7/min7 and maj/min; other reference qualities such as sus, dim or aug are left out, not folded),
``"mirex"`` (at least three notes in common), ``"triads"``, ``"thirds"``, ``"root"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono, resample
from arfm.evaluate.estimators import Availability, choose, probe, reference_kind
from arfm.evaluate.results import MetricResult
from arfm.vocab import _LABEL, N_CHORDS, chord_from_index, chord_pitch_classes, pitch_class, slash_chords

Segments = list[tuple[str, float, float]]


@dataclass
class ChordEstimate:
    segments: Segments
    method: str


def chordino_available() -> Availability:
    """True when Chordino imports (``chord_extractor.extractors`` sets VAMP_PATH to the bundled plugin, then
    ``vamp``); otherwise false, with the import error as ``.reason``."""
    return probe("Chordino (chord-extractor)", ("chord_extractor.extractors", "vamp"))


VOCABS = ("tetrads", "sevenths", "majmin", "mirex", "triads", "thirds", "root")
DEFAULT_VOCAB = "tetrads"
# Chordino's qualities (arfm.vocab.CHORD_TYPES), then other common suffixes a reference may use -> Harte
_HARTE = {"": "maj", "m": "min", "m7b5": "hdim7", "6": "maj6", "7": "7", "maj7": "maj7", "m7": "min7",
          "m6": "min6", "dim": "dim", "aug": "aug",
          "maj": "maj", "min": "min", "M7": "maj7", "min7": "min7", "hdim7": "hdim7", "hdim": "hdim7",
          "min6": "min6", "maj6": "maj6", "o": "dim", "+": "aug", "dim7": "dim7", "sus4": "sus4", "sus2": "sus2",
          "9": "9", "maj9": "maj9", "m9": "min9"}
_DEGREES = ("1", "b2", "2", "b3", "3", "4", "b5", "5", "b6", "6", "b7", "7")


def harte(label: str) -> str:
    """Chordino-style label -> Harte syntax for mir_eval (``"G/B"`` -> ``"G:maj/3"``); ``X`` when unparseable."""
    label = str(label).strip()
    if label in ("N", ""):
        return "N"
    m = _LABEL.match(label)
    if not m:
        return "X"
    try:
        root = pitch_class(m.group(1))
    except ValueError:
        return "X"
    quality = m.group(2)
    if quality not in _HARTE:
        return "X"
    out = f"{m.group(1)}:{_HARTE[quality]}"
    bass = m.group(3)
    if bass and not bass.isdigit():
        try:
            out += "/" + _DEGREES[(pitch_class(bass) - root) % 12]
        except ValueError:
            return "X"
    return out


def _span(segments: Segments, duration: float) -> tuple[np.ndarray, list[str]]:
    """Segments -> contiguous mir_eval intervals over ``[0, duration]`` in Harte labels, ``N`` in the gaps
    (mir_eval's ``adjust_intervals`` pads only the two ends, so the gaps are filled here)."""
    intervals, labels, t = [], [], 0.0
    for lab, s, e in sorted(((str(lab), float(s), float(e)) for lab, s, e in segments), key=lambda x: x[1]):
        s, e = max(s, t), min(e, duration)
        if e <= s:
            continue
        if s > t:
            intervals.append((t, s))
            labels.append("N")
        intervals.append((s, e))
        labels.append(harte(lab))
        t = e
    if t < duration:
        intervals.append((t, duration))
        labels.append("N")
    return np.asarray(intervals, dtype=np.float64), labels


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


def chord_iou(estimated: Segments, reference: Segments, duration: float | None = None,
              vocab: str = DEFAULT_VOCAB) -> float | None:
    """IOU of two segment sequences over ``[0, duration]`` under mir_eval's ``vocab`` rule: ``A / (2 - A)``
    with ``A`` mir_eval's duration-weighted accuracy (see the module doc); ``None`` when no reference time
    can be judged under the rule."""
    import mir_eval

    if vocab not in VOCABS:
        raise ValueError(f"unknown chord vocabulary {vocab!r}: {', '.join(VOCABS)} (mir_eval.chord rules)")
    if duration is None:
        ends = [e for _, _, e in list(estimated) + list(reference)]
        duration = max(ends) if ends else 0.0
    if duration <= 0:
        raise ValueError("chord_iou needs a positive duration")
    ref_int, ref_lab = _span(reference, float(duration))
    est_int, est_lab = _span(estimated, float(duration))
    intervals, ref_l, est_l = mir_eval.util.merge_labeled_intervals(ref_int, ref_lab, est_int, est_lab)
    durations = mir_eval.util.intervals_to_durations(intervals)
    comparisons = getattr(mir_eval.chord, vocab)(ref_l, est_l)
    if not np.any((comparisons >= 0) & (durations > 0)):
        return None
    accuracy = float(mir_eval.chord.weighted_accuracy(comparisons, durations))
    return accuracy / (2.0 - accuracy)


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


def _magnitude(x: np.ndarray, n_fft: int, hop: int, center: bool) -> np.ndarray:
    """``|STFT|`` ``[frames, bins]`` by ``torch.stft`` with a symmetric Hann window (numpy's ``hanning``)."""
    import torch

    window = torch.hann_window(n_fft, periodic=False, dtype=torch.float64)
    stft = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), n_fft, hop_length=hop,
                      window=window, center=center, pad_mode="constant", return_complex=True)
    return stft.abs().T.numpy()


def chroma_frames(audio: np.ndarray, sample_rate: int, sr: int = 22050, n_fft: int = 4096,
                  hop: int = 2048) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-compressed STFT chroma ``[frames, 12]``, frame energy ``[frames]`` and the frame rate."""
    x = resample(audio, sample_rate, sr).astype(np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    spec = _magnitude(x, n_fft, hop, center=False)
    n_frames = len(spec)
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


# The fallback estimator is written here on purpose: it must run where Chordino cannot be installed, and no
# other installed library recognises chords (librosa gives the chroma, mir_eval only compares labels). Its
# results are always labelled "chroma-template".
def _template(audio: np.ndarray, sample_rate: int, switch_penalty: float = 0.6, temperature: float = 0.05,
              silence_db: float = -50.0) -> Segments:
    chroma, energy, fps = chroma_frames(audio, sample_rate)
    duration = len(as_mono(audio)) / sample_rate
    if len(chroma) == 0:
        return [("N", 0.0, duration)]
    t, sizes = _harmonic_templates()
    norm = chroma / np.maximum(np.linalg.norm(chroma, axis=1, keepdims=True), 1e-12)
    # a slight preference for triads over their extensions, and for root position (no bass chroma here)
    score = norm @ t.T - 0.02 * (sizes[None] - 3) - 0.001 * slash_chords()[None]
    loud = 20 * np.log10(energy / (energy.max() + 1e-12) + 1e-12) > silence_db
    n_score = np.where(loud, score.max(axis=1) - 0.2, score.max(axis=1) + 1.0)
    emit = np.concatenate([score, n_score[:, None]], axis=1) / temperature  # [T, 193], N last
    # Viterbi (librosa.sequence.viterbi) with a uniform switch penalty: staying is free, switching to any other
    # chord costs `switch_penalty / temperature`. Scores become per-frame softmax probabilities and the rows of
    # the transition matrix are normalized: both subtract a constant per frame, which leaves the best path as is.
    from librosa.sequence import viterbi
    from scipy.special import softmax

    k = emit.shape[1]
    trans = np.full((k, k), np.exp(-switch_penalty / temperature))
    np.fill_diagonal(trans, 1.0)
    path = viterbi(softmax(emit, axis=1).T, trans / trans.sum(axis=1, keepdims=True))
    hop_s = 1.0 / fps
    changes = []
    for i, k in enumerate(path):
        if i == 0 or k != path[i - 1]:
            lab = "N" if k == N_CHORDS - 1 else chord_from_index(int(k))
            changes.append((lab, 0.0 if i == 0 else i * hop_s + 0.5 * hop_s))
    return changes_to_segments(changes, duration)


def estimate_chords(audio: Any, sample_rate: int, method: str = "auto") -> ChordEstimate:
    """Chord segments of one clip; ``method`` is ``auto`` (Chordino when it imports), ``chordino`` or
    ``chroma-template``."""
    x = as_mono(audio)
    method, _ = choose(method, "chordino", "chroma-template", chordino_available())
    if method == "chordino":
        return ChordEstimate(_chordino(x, sample_rate), "chordino")
    if method == "chroma-template":
        return ChordEstimate(_template(x, sample_rate), "chroma-template")
    raise ValueError(f"unknown chord method {method!r}: auto, chordino or chroma-template")


def chord_iou_metric(generated: Sequence[Any], references: Sequence[Any], sample_rate: int,
                     method: str = "auto", vocab: str = DEFAULT_VOCAB) -> MetricResult:
    """Mean chord IOU of generated clips against references.

    Each reference is either a segment list (exact labels, e.g. the synthetic data's ``labels["chords"]``) or
    audio (its chords are then estimated with the same method). The span is the generated clip's duration.
    ``method`` of the result names the estimator, the reference and the rule (``"chordino vs labels,
    tetrads"``); ``extra`` holds them apart, and ``fallback`` says why Chordino was not used when it was not.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated clips but {len(references)} references")
    if vocab not in VOCABS:
        raise ValueError(f"unknown chord vocabulary {vocab!r}: {', '.join(VOCABS)} (mir_eval.chord rules)")
    method, fallback = choose(method, "chordino", "chroma-template", chordino_available())
    values: list[float | None] = []
    kinds: set[str] = set()
    for gen, ref in zip(generated, references):
        g = as_mono(gen)
        duration = len(g) / sample_rate
        if ref is None or duration <= 0:
            values.append(None)
            continue
        est = estimate_chords(g, sample_rate, method).segments
        if _is_segments(ref):
            kinds.add("labels")
            ref_segs = [(str(lab), float(s), float(e)) for lab, s, e in ref]
        else:
            kinds.add("audio")
            ref_segs = estimate_chords(ref, sample_rate, method).segments
        values.append(chord_iou(est, ref_segs, duration, vocab=vocab))
    reference = reference_kind(kinds)
    return MetricResult.from_samples("chord_iou", values, f"{method} vs {reference}, {vocab}", estimator=method,
                                     reference=reference, vocab=vocab, fallback=fallback)


def _is_segments(ref: Any) -> bool:
    if isinstance(ref, np.ndarray) or hasattr(ref, "detach"):
        return False
    return len(ref) == 0 or (isinstance(ref[0], (list, tuple)) and len(ref[0]) == 3 and isinstance(ref[0][0], str))
