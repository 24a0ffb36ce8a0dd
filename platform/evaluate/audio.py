"""Small audio helpers shared by the metrics: mono float32 arrays and polyphase resampling."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np


def as_mono(audio: Any) -> np.ndarray:
    """numpy or torch audio of shape ``[S]``, ``[C, S]`` or ``[1, C, S]`` -> float32 ``[S]`` (channels averaged)."""
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().float().numpy()
    x = np.asarray(audio, dtype=np.float32)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] <= 8 else x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"expected mono or [channels, samples] audio, got shape {np.shape(audio)}")
    return np.ascontiguousarray(x)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window); a no-op when the rates match."""
    x = as_mono(x)
    if int(sr_from) == int(sr_to):
        return x
    from scipy.signal import resample_poly

    frac = Fraction(int(sr_to), int(sr_from)).limit_denominator(10_000)
    return resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)
