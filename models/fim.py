"""Fill-in-the-middle layout for AR inpainting (Bavarian et al., 2022; section 5.3, appendix J).

A segment ``[A, B, C]`` of ``T`` frames, with ``B = [start, end)`` the span to inpaint, is reorganised
with three special tokens into ``T + 3`` frames

    [<a>, A, <c>, C, <b>, B]

and the AR model is trained on it causally. At inference ``[<a>, A, <c>, C, <b>]`` is the prompt and
the model continues with ``B``. A special token fills all K codebooks of its frame. Every sample of a
batch may have its own ``start``; the prompt length ``T + 3 - |B|`` is shared when ``|B|`` is.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fim_order(start: Tensor, end: Tensor, n_frames: int) -> Tensor:
    """``[B, T + 3]`` long: for each output frame, its index in ``[frames 0..T-1, <a>=T, <c>=T+1, <b>=T+2]``."""
    s, e = start[:, None], end[:, None]
    p = torch.arange(n_frames + 3, device=start.device)[None]
    c_end = s + 2 + (n_frames - e)  # position of <b>
    order = torch.where(p == 0, n_frames, p - 1)  # <a> then A
    order = torch.where(p == s + 1, n_frames + 1, order)  # <c>
    order = torch.where((p > s + 1) & (p < c_end), e + (p - s - 2), order)  # C
    order = torch.where(p == c_end, n_frames + 2, order)  # <b>
    order = torch.where(p > c_end, s + (p - c_end - 1), order)  # B
    return order


def fim_arrange(x: Tensor, start: Tensor, end: Tensor, fill: tuple[int, int, int]) -> Tensor:
    """Reorder the last (frame) axis of ``x`` ``[B, ..., T]`` into the FIM layout ``[B, ..., T + 3]``.

    ``fill`` gives the values of the ``(<a>, <c>, <b>)`` frames (special token ids, or the null
    index for temporally aligned controls).
    """
    n = x.shape[-1]
    specials = torch.tensor(fill, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 3)
    ext = torch.cat([x, specials], dim=-1)
    order = fim_order(start, end, n)
    order = order.view(order.shape[0], *([1] * (x.dim() - 2)), n + 3).expand(*x.shape[:-1], n + 3)
    return ext.gather(-1, order)


def fim_restore(x: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Inverse of :func:`fim_arrange`: ``[B, ..., T + 3] -> [B, ..., T]`` in the original frame order."""
    n = x.shape[-1] - 3
    inverse = fim_order(start, end, n).argsort(dim=-1)[:, :n]
    inverse = inverse.view(inverse.shape[0], *([1] * (x.dim() - 2)), n).expand(*x.shape[:-1], n)
    return x.gather(-1, inverse)


def prompt_frames(n_frames: int, span: int) -> int:
    """Length of the prompt ``[<a>, A, <c>, C, <b>]`` for a span of ``span`` frames."""
    return n_frames + 3 - span
