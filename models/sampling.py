"""Token sampling for AR decoding (section 3.2, appendices D and I): temperature, top-k or top-p, entropy.

Randomness: ``generator`` is one ``torch.Generator`` for the whole batch, or a sequence with one generator per
row of the batch. A :class:`Sampler` draws every uniform number a decode will use up front (one per row, step
and codebook, from that row's generator when there is one per row) and samples each step by inverting the
cumulative distribution at its uniform: with one generator per row, row ``i`` draws only from
``generator[i]``, so its tokens do not depend on which other rows share the batch (per-request seeds,
batched serving), and a step allocates no random state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy (nats) of ``softmax(logits / temperature)`` over the last axis."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Set to -inf every logit outside the top-k, or outside the top-p nucleus (0 disables each).

    Top-k and top-p are exclusive (appendix D searches one or the other): asking for both raises.
    """
    if top_k and top_p:
        raise ValueError(f"top_k={top_k} and top_p={top_p}: truncate with top-k or top-p, not both")
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def uniforms(shape: tuple[int, ...], generator: Generators, device) -> Tensor:
    """``U[0, 1)`` numbers of ``shape = (rows, steps, ...)``.

    With one generator per row, row ``i`` comes from ``generator[i]`` alone; one generator (or the global one)
    is one stream drawn step by step across the rows, as a decode consumes it.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != shape[0]:
            raise ValueError(f"{len(gens)} generators for a batch of {shape[0]} rows")
        return torch.stack([torch.rand(shape[1:], generator=g, device=g.device) for g in gens]).to(device)
    where = generator.device if generator is not None else device
    step_major = (shape[1], shape[0], *shape[2:])
    return torch.rand(step_major, generator=generator, device=where).transpose(0, 1).to(device)


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Index ``i`` with ``cdf[i-1] <= u * total < cdf[i]`` along the last axis: a draw from ``probs`` for ``u ~ U[0, 1)``.

    Tokens of probability 0 are never drawn (the cdf does not rise at them).
    """
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class Sampler:
    """Samples ``[B, K]`` tokens from ``[B, K, V]`` logits at each step of one decode of ``steps`` steps.

    ``top_k == 1`` or ``temperature == 0`` is greedy (argmax). Top-k alone samples among the k best logits only
    (no pass over the whole vocabulary); top-p goes through :func:`filter_logits`.
    """

    def __init__(self, rows: int, steps: int, n_codebooks: int, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 0.0, generator: Generators = None, device=None) -> None:
        self.greedy = top_k == 1 or temperature == 0
        if top_k and top_p and not self.greedy:
            raise ValueError(f"top_k={top_k} and top_p={top_p}: truncate with top-k or top-p, not both")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.u = None if self.greedy else uniforms((rows, steps, n_codebooks), generator, device)

    def __call__(self, logits: Tensor, step: int) -> Tensor:
        if self.greedy:
            return logits.argmax(dim=-1)
        logits = logits.float() / self.temperature
        u = self.u[:, step]
        if self.top_k and not 0.0 < self.top_p < 1.0 and self.top_k < logits.shape[-1]:
            values, index = torch.topk(logits, self.top_k, dim=-1)
            pick = inverse_cdf(torch.softmax(values, dim=-1), u)
            return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)
        return inverse_cdf(torch.softmax(filter_logits(logits, self.top_k, self.top_p), dim=-1), u)
