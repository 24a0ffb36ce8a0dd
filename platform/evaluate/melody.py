"""Melody chromagram cosine similarity (section 4.3; MusicGen, Copet et al., 2023).

The metric of audiocraft's ``ChromaCosineSimilarityMetric`` with MusicGen's settings (``sample_rate`` 32 kHz,
``n_chroma=12``, ``radix2_exp=14``, ``argmax=True``), computed here with ``torch.stft`` and librosa's chroma filterbank:

1. resample to 32 kHz, mono;
2. power spectrogram (``torch.stft``): periodic Hann window of ``2**14`` samples, hop ``2**12`` (128 ms),
   centred (reflect padding), window-normalised (``|STFT|^2 / sum(w^2)``, as torchaudio's ``normalized=True``);
3. chroma = ``librosa.filters.chroma(sr, n_fft, tuning=0, n_chroma=12) @ power``; each frame divided by its
   max (inf-norm, eps 1e-6), then replaced by the one-hot vector of its argmax (silent frames fall on bin 0,
   as in audiocraft);
4. per-frame cosine similarity of reference and generated chromagrams over the first
   ``ceil(len(reference) / hop)`` frames (both clips cut to the shorter), averaged over frames.

With one-hot frames the cosine is 1 where the dominant pitch class agrees and 0 elsewhere, so a clip scores
1 against itself and less against a transposed copy. The dataset value is the mean over clips (audiocraft
averages over all frames of all clips; equal for equal lengths).

Reference melodies given as note events ``[(midi, start_s, end_s), ...]`` (the synthetic data's exact labels)
are compared with :func:`melody_label_similarity`: the one-hot pitch class of the sounding note against the
generated clip's one-hot chroma, over the frames where a note sounds.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono, resample
from arfm.evaluate.estimators import reference_kind
from arfm.evaluate.results import MetricResult

CHROMA_SR = 32000
RADIX2_EXP = 14
METHOD = "chroma-argmax (MusicGen)"


@lru_cache(maxsize=4)
def _filterbank(sr: int, n_fft: int) -> np.ndarray:
    from librosa import filters

    return filters.chroma(sr=sr, n_fft=n_fft, tuning=0, n_chroma=12).astype(np.float64)


def chromagram(audio: Any, sample_rate: int, argmax: bool = True, radix2_exp: int = RADIX2_EXP,
               chroma_sr: int = CHROMA_SR) -> np.ndarray:
    """``[frames, 12]`` chromagram (one-hot per frame when ``argmax``) at hop ``2**radix2_exp // 4``."""
    n_fft = 2 ** radix2_exp
    hop = n_fft // 4
    import torch

    x = resample(as_mono(audio), sample_rate, chroma_sr).astype(np.float64)
    if len(x) < n_fft:
        pad = n_fft - len(x)
        x = np.pad(x, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft, dtype=torch.float64)  # periodic, as audiocraft's torchaudio Spectrogram
    stft = torch.stft(torch.from_numpy(x), n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    spec = (stft.abs() ** 2 / window.pow(2).sum()).T.numpy()  # [frames, bins], torchaudio's normalized=True
    raw = spec @ _filterbank(chroma_sr, n_fft).T  # [frames, 12]
    norm = raw / np.maximum(np.abs(raw).max(axis=1, keepdims=True), 1e-6)
    if argmax:
        onehot = np.zeros_like(norm)
        onehot[np.arange(len(norm)), norm.argmax(axis=1)] = 1.0
        return onehot
    return norm


def _cosine_rows(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-row cosine similarity (``torch.nn.functional.cosine_similarity``, as audiocraft's metric)."""
    import torch

    return torch.nn.functional.cosine_similarity(torch.from_numpy(a), torch.from_numpy(b), dim=1, eps=eps).numpy()


def melody_similarity(generated: Any, reference: Any, sample_rate: int) -> float:
    """Mean per-frame cosine similarity of the argmax chromagrams (1 for identical clips)."""
    g, r = as_mono(generated), as_mono(reference)
    n = min(len(g), len(r))
    g, r = g[:n], r[:n]
    cg, cr = chromagram(g, sample_rate), chromagram(r, sample_rate)
    hop = 2 ** RADIX2_EXP // 4
    t = min(len(cg), len(cr), int(math.ceil(n * CHROMA_SR / sample_rate / hop)))
    return float(_cosine_rows(cr[:t], cg[:t]).mean())


def melody_label_similarity(generated: Any, notes: Sequence[Sequence[float]], sample_rate: int) -> float | None:
    """Agreement of the generated clip's argmax chroma with the pitch class of labelled melody notes."""
    cg = chromagram(generated, sample_rate)
    hop_s = (2 ** RADIX2_EXP // 4) / CHROMA_SR
    centres = np.arange(len(cg)) * hop_s  # centred frames
    target = np.zeros_like(cg)
    active = np.zeros(len(cg), dtype=bool)
    for midi, start, end in notes:
        m = (centres >= float(start)) & (centres < float(end))
        target[m] = 0.0
        target[m, int(round(float(midi))) % 12] = 1.0
        active |= m
    if not active.any():
        return None
    return float(_cosine_rows(target[active], cg[active]).mean())


def _is_notes(ref: Any) -> bool:
    if isinstance(ref, np.ndarray) or hasattr(ref, "detach"):
        return False
    return len(ref) == 0 or (isinstance(ref[0], (list, tuple)) and len(ref[0]) == 3)


def melody_similarity_metric(generated: Sequence[Any], references: Sequence[Any], sample_rate: int) -> MetricResult:
    """Mean melody similarity over clips; each reference is a clip or a list of ``(midi, start, end)`` notes."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated clips but {len(references)} references")
    values: list[float | None] = []
    kinds = set()
    for gen, ref in zip(generated, references):
        if ref is None:
            values.append(None)
        elif _is_notes(ref):
            kinds.add("labels")
            values.append(melody_label_similarity(gen, ref, sample_rate))
        else:
            kinds.add("audio")
            values.append(melody_similarity(gen, ref, sample_rate))
    reference = reference_kind(kinds)
    return MetricResult.from_samples("melody_sim", values, f"{METHOD} vs {reference}", estimator=METHOD,
                                     reference=reference)
