"""Classifier-free guidance, single and multi-source (section 4.5; JASCO, Tal et al., 2024).

Single source (text and all controls together, ``w = cfg``):

    u = u(null) + w * (u(text, C) - u(null))

Multi-source, with the sources ordered ``s_1 = text, s_2..s_n = controls`` and ``u_i`` the prediction
conditioned on the first ``i`` sources only (``u_0`` fully null):

    u = u_0 + sum_i w_i * (u_i - u_{i-1})

With all weights 1 this telescopes to the fully conditional ``u_n``; with the control weights 0 it is
text-only CFG with every control set to its null. Guidance applies to AR logits and FM velocities
alike; all the branches run as one batch of ``n_branches * B`` rows (branch-major order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Branch:
    """One guidance branch: whether the text is kept and which controls are kept (the rest are null)."""

    text: bool
    controls: frozenset[str]


class Guidance:
    """Plans the batched branches for given weights and combines their outputs.

    ``cfg``: text (single-source: overall) weight. ``control_cfg``: per-control weights; empty or
    None selects single-source CFG. A control present in ``controls`` but missing from a non-empty
    ``control_cfg`` gets weight 1 (used, not amplified); weights for absent controls are ignored.
    """

    def __init__(self, cfg: float = 1.0, control_cfg: Mapping[str, float] | None = None,
                 controls: Sequence[str] = ()) -> None:
        present = list(controls)
        if control_cfg:
            self.mode = "multi"
            self.branches = [Branch(False, frozenset()), Branch(True, frozenset())]
            for i in range(len(present)):
                self.branches.append(Branch(True, frozenset(present[: i + 1])))
            self.weights = [float(cfg)] + [float(control_cfg.get(c, 1.0)) for c in present]
        elif cfg == 1.0:
            self.mode, self.branches, self.weights = "none", [Branch(True, frozenset(present))], []
        else:
            self.mode = "single"
            self.branches = [Branch(True, frozenset(present)), Branch(False, frozenset())]
            self.weights = [float(cfg)]

    @property
    def n(self) -> int:
        return len(self.branches)

    def text_drop(self, batch: int, device) -> Tensor:
        """``[n * B]`` bool: rows whose text is replaced by the null text."""
        flags = torch.tensor([not b.text for b in self.branches], device=device)
        return flags.repeat_interleave(batch)

    def control_drop(self, names: Sequence[str], batch: int, device) -> dict[str, Tensor]:
        """``{name: [n * B] bool}``: rows whose control is replaced by its null token."""
        return {c: torch.tensor([c not in b.controls for b in self.branches], device=device).repeat_interleave(batch)
                for c in names}

    def combine(self, out: Tensor) -> Tensor:
        """``[n * B, ...] -> [B, ...]`` guided output."""
        parts = out.chunk(self.n, dim=0)
        if self.mode == "none":
            return parts[0]
        if self.mode == "single":
            return cfg_combine(parts[0], parts[1], self.weights[0])
        return multi_source_combine(list(parts), self.weights)


def cfg_combine(cond: Tensor, uncond: Tensor, weight: float) -> Tensor:
    """``uncond + w * (cond - uncond)``."""
    return uncond + weight * (cond - uncond)


def multi_source_combine(outputs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``u_0 + sum_i w_i (u_i - u_{i-1})`` for ``outputs = [u_0, ..., u_n]`` and ``n`` weights."""
    if len(outputs) != len(weights) + 1:
        raise ValueError(f"need len(weights) + 1 outputs, got {len(outputs)} and {len(weights)}")
    out = outputs[0]
    for i, w in enumerate(weights, start=1):
        out = out + w * (outputs[i] - outputs[i - 1])
    return out
