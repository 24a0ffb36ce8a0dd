"""The study's audio: clips written under opaque names, their waveform peaks, and the degraded anchors.

A clip's file name is 32 random hex digits (``secrets``): neither the name nor the WAV (16-bit PCM, no metadata
chunks) says which system made it. The rater page gets audio by the item's opaque id, never by file name.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

PEAK_BUCKETS = 600


def write_clip(media_dir: str | Path, audio: np.ndarray, sample_rate: int) -> str:
    """Write ``audio`` (mono float) as 16-bit WAV under a fresh random name; return the name."""
    import soundfile as sf

    media_dir = Path(media_dir)
    media_dir.mkdir(parents=True, exist_ok=True)
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:  # never clip a system's audio: scale the rare clip that exceeds full scale
        x = x / peak
    name = f"{secrets.token_hex(16)}.wav"
    sf.write(media_dir / name, x, int(sample_rate), subtype="PCM_16", format="WAV")
    return name


def peaks(audio: np.ndarray, buckets: int = PEAK_BUCKETS) -> list[list[float]]:
    """``[[min, max], ...]`` over ``buckets`` equal slices of the clip (what the page draws)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return []
    edges = np.linspace(0, x.size, min(buckets, x.size) + 1).astype(int)
    return [[round(float(x[a:b].min()), 3), round(float(x[a:b].max()), 3)] for a, b in zip(edges[:-1], edges[1:])]


def _noise_like(ref: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(ref)))) if ref.size else 0.1
    return (rng.standard_normal(n) * max(rms, 0.05)).astype(np.float32)


def degrade_span(ref: np.ndarray, span: tuple[float, float], sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The inpainting anchor: the reference with its span replaced by white noise at the clip's loudness, cut in
    and out hard (no smooth transition, no musical match)."""
    x = np.asarray(ref, dtype=np.float32).copy()
    a, b = int(round(span[0] * sample_rate)), min(len(x), int(round(span[1] * sample_rate)))
    x[a:b] = np.clip(_noise_like(x, b - a, rng), -1.0, 1.0)  # within full scale: the context stays as it was
    return x


def degrade_clip(ref: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The quality anchor: the reference under noise 6 dB louder than itself, low-passed at 1 kHz and clipped."""
    from scipy.signal import butter, sosfilt

    x = np.asarray(ref, dtype=np.float32)
    sos = butter(4, min(1000.0, 0.45 * sample_rate), fs=sample_rate, output="sos")
    y = sosfilt(sos, x).astype(np.float32) + 2.0 * _noise_like(x, len(x), rng)
    return np.clip(3.0 * y, -0.5, 0.5).astype(np.float32)
