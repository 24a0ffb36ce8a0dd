"""Random inpainting spans (section 5.3, appendix J).

The study masks a fixed 5 s span of a 10 s segment whose start is uniform with at least 1 s of
context on both sides: ``span_frac = 0.5`` and ``margin_frac = 0.1`` of the ``T`` frames. The same
sampler drives AR fill-in-the-middle training and supervised FM inpainting training.
"""

from __future__ import annotations

import torch
from torch import Tensor


def span_length(n_frames: int, span_frac: float) -> int:
    """Number of masked frames ``M = round(span_frac * T)``, at least 1 and at most ``T - 1``."""
    return int(min(max(1, round(span_frac * n_frames)), max(1, n_frames - 1)))


def random_spans(
    batch: int,
    n_frames: int,
    span_frac: float = 0.5,
    margin_frac: float = 0.1,
    *,
    device=None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(start, end)`` long ``[B]``: spans of ``span_length`` frames, start ~ U[margin, T - margin - M]."""
    m = span_length(n_frames, span_frac)
    margin = int(round(margin_frac * n_frames))
    margin = min(margin, (n_frames - m) // 2)
    hi = n_frames - margin - m  # inclusive
    where = generator.device if generator is not None else device
    start = torch.randint(margin, hi + 1, (batch,), generator=generator, device=where).to(device)
    return start, start + m


def as_spans(start, end, batch: int, device=None) -> tuple[Tensor, Tensor]:
    """Broadcast ints or tensors to long ``[B]`` start/end tensors."""
    s = torch.as_tensor(start, device=device).long().expand(batch).clone()
    e = torch.as_tensor(end, device=device).long().expand(batch).clone()
    if bool((e <= s).any()):
        raise ValueError("inpainting span must satisfy start < end")
    return s, e


def span_mask(start: Tensor, end: Tensor, n_frames: int) -> Tensor:
    """``[B, T]`` bool, True inside ``[start, end)`` (the frames to generate)."""
    t = torch.arange(n_frames, device=start.device)
    return (t[None] >= start[:, None]) & (t[None] < end[:, None])
