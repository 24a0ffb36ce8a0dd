"""Token sampling for AR decoding (section 3.2, appendices D and I): temperature, top-k or top-p, entropy.

Randomness: ``generator`` is one ``torch.Generator`` for the whole batch, or a sequence with one generator per
row of the leading batch dimension. With one generator per row, row ``i`` draws only from ``generator[i]``,
so its tokens do not depend on which other rows share the batch (per-request seeds, batched serving).
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


def sample_tokens(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                  generator: Generators = None) -> Tensor:
    """``[B, ..., V] -> [B, ...]`` long. ``top_k == 1`` or ``temperature == 0`` is greedy (argmax).

    ``generator``: one for the batch, or one per row ``b`` (see the module doc).
    """
    if top_k == 1 or temperature == 0:
        return logits.argmax(dim=-1)
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != logits.shape[0]:
            raise ValueError(f"{len(gens)} generators for a batch of {logits.shape[0]} rows")
        return torch.stack([_sample(logits[i], temperature, top_k, top_p, g) for i, g in enumerate(gens)])
    return _sample(logits, temperature, top_k, top_p, generator)


def _sample(logits: Tensor, temperature: float, top_k: int, top_p: float,
            generator: torch.Generator | None) -> Tensor:
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    if generator is not None and generator.device != probs.device:  # e.g. a CPU generator for a CUDA model
        u = torch.rand(probs.shape[0], 1, generator=generator, device=generator.device).to(probs.device)
        cdf = probs.cumsum(dim=-1)
        idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=probs.shape[-1] - 1)
        return idx.view(logits.shape[:-1])
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
