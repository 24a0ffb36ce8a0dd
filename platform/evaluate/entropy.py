"""AR decoder entropy per sampling step over the first codebook (appendix I, figure 9).

At every sampling step ``t`` the AR model's distribution over the first EnCodec codebook ``p_t`` (after
classifier-free guidance and temperature, before top-k/top-p truncation — whatever ``ARModel.generate(...,
return_entropy=True)`` returns) has entropy ``H_t = -sum_k p_t(k) ln p_t(k)`` in nats. Figure 9 averages
``H_t`` over prompts (100 in the paper) at each step; :func:`entropy_curve` does that with a 95% t interval
per step (ragged inputs allowed: a shorter sequence counts only where it has values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.results import MetricResult


def entropy_from_logits(logits: Any, dim: int = -1) -> np.ndarray:
    """Entropy in nats of ``softmax(logits)`` along ``dim`` (numpy or torch input, numpy output)."""
    if hasattr(logits, "detach"):
        import torch

        lp = torch.log_softmax(logits.detach().float(), dim=dim)
        return (-(lp.exp() * lp).sum(dim=dim)).cpu().numpy()
    from scipy.special import softmax
    from scipy.stats import entropy

    return entropy(softmax(np.asarray(logits, dtype=np.float64), axis=dim), axis=dim)


@dataclass
class EntropyCurve:
    """Per-step mean entropy over prompts with a 95% interval; ``n[t]`` prompts reached step ``t``."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray

    @property
    def steps(self) -> np.ndarray:
        return np.arange(len(self.mean))

    def to_dict(self) -> dict[str, list]:
        return {"mean": self.mean.tolist(), "lo": self.lo.tolist(), "hi": self.hi.tolist(),
                "n": self.n.astype(int).tolist()}


def entropy_curve(per_prompt: Sequence[Sequence[float]] | np.ndarray) -> EntropyCurve:
    """Aggregate ``[prompts][steps]`` entropies (e.g. stacked ``generate(..., return_entropy=True)`` outputs)."""
    from arfm.evaluate.stats import curve_ci

    rows = [np.asarray(r, dtype=np.float64).ravel() for r in (per_prompt.tolist() if isinstance(per_prompt, np.ndarray)
                                                               else per_prompt)]
    mean, lo, hi, n = curve_ci(rows)
    return EntropyCurve(mean, lo, hi, n)


def entropy_metric(per_prompt: Sequence[Sequence[float]], window: tuple[int, int] | None = None) -> MetricResult:
    """Scalar summary: each prompt's mean entropy over steps ``[a, b)`` (all steps by default), then the
    mean over prompts. The per-step curve itself goes to ``per_sample.json`` (``"entropy"``)."""
    vals = []
    for r in per_prompt:
        r = np.asarray(r, dtype=np.float64).ravel()
        if window is not None:
            r = r[window[0]:window[1]]
        vals.append(float(r.mean()) if r.size else None)
    return MetricResult.from_samples("entropy", vals, "first-codebook entropy (nats)")
