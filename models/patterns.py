"""Codebook interleaving patterns for the AR decoder (section 3.2, figure 1).

An RVQ code sequence ``q`` of shape ``[B, K, n]`` (K codebooks, n frames) is laid out on a grid of
``S`` decoding steps. The **delay** pattern of MusicGen maps codebook ``i`` of frame ``j`` to step
``j + i - 1`` (1-indexed in the paper, ``j + i`` 0-indexed here):

    P : [N_q] x [n] -> [N_q] x [n + N_q - 1],    P(i, j) = (i, j + i - 1)

so that codebook ``i`` of frame ``j`` is predicted after codebooks ``< i`` of frames ``<= j``.
Grid cells that hold no code are filled with a special *empty* token (index ``codebook_size``),
which also serves as the start token. The **parallel** pattern is the identity (all K codebooks of
frame ``j`` at step ``j``), kept as the trivial reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

PATTERNS = ("delay", "parallel")


def delays(n_codebooks: int, pattern: str = "delay") -> list[int]:
    """Step offset of each codebook: ``[0, 1, ..., K-1]`` for delay, zeros for parallel."""
    if pattern == "delay":
        return list(range(n_codebooks))
    if pattern == "parallel":
        return [0] * n_codebooks
    raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")


def n_steps(n_frames: int, n_codebooks: int, pattern: str = "delay") -> int:
    """Length S of the interleaved sequence: ``n + K - 1`` for delay, ``n`` for parallel."""
    return n_frames + max(delays(n_codebooks, pattern))


def step_frames(n_frames: int, n_codebooks: int, pattern: str = "delay", device=None) -> Tensor:
    """``[K, S]`` long: the frame index held by each grid cell (out-of-range where the cell is empty)."""
    d = torch.tensor(delays(n_codebooks, pattern), device=device)
    steps = torch.arange(n_steps(n_frames, n_codebooks, pattern), device=device)
    return steps[None, :] - d[:, None]


def valid_mask(n_frames: int, n_codebooks: int, pattern: str = "delay", device=None) -> Tensor:
    """``[K, S]`` bool: True where the grid cell holds a code, False where it holds the empty token."""
    f = step_frames(n_frames, n_codebooks, pattern, device)
    return (f >= 0) & (f < n_frames)


def interleave(codes: Tensor, empty: int, pattern: str = "delay") -> Tensor:
    """``[B, K, n] -> [B, K, S]``: place codebook ``k`` of frame ``j`` at step ``j + delay[k]``."""
    b, k, n = codes.shape
    out = codes.new_full((b, k, n_steps(n, k, pattern)), empty)
    for i, d in enumerate(delays(k, pattern)):
        out[:, i, d : d + n] = codes[:, i]
    return out


def deinterleave(seq: Tensor, n_frames: int, pattern: str = "delay") -> Tensor:
    """``[B, K, S, ...] -> [B, K, n, ...]``: the inverse of :func:`interleave` (also for logits)."""
    k = seq.shape[1]
    return torch.stack([seq[:, i, d : d + n_frames] for i, d in enumerate(delays(k, pattern))], dim=1)
