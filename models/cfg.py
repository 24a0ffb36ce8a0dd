"""Classifier-free guidance: single source, and two multi-source forms (section 4.5).

Single source (text and all controls together, ``w = cfg``):

    u = u(null) + w * (u(text, C) - u(null))

Multi-source, JASCO's form (Tal et al., 2024): three branches, all conditions, text only (every control
null) and nothing:

    u = w_all * u(all) + w_txt * u(text) + (1 - w_all - w_txt) * u(null)

Multi-source, nested form (this project's per-control generalisation, not JASCO's): with the sources
ordered ``s_1 = text, s_2..s_n = controls`` and ``u_i`` the prediction conditioned on the first ``i``
sources only (``u_0`` fully null),

    u = u_0 + sum_i w_i * (u_i - u_{i-1})

With all weights 1 it telescopes to the fully conditional ``u_n``; with the control weights 0 it is
text-only CFG with every control null. The two forms coincide when every control shares one weight
``w_c`` (text weight ``w_1``): the sum telescopes to ``w_c u_n + (w_1 - w_c) u_1 + (1 - w_1) u_0``, i.e.
JASCO's form with ``w_all = w_c`` and ``w_txt = w_1 - w_c`` (:func:`nested_to_jasco`).

Guidance applies to AR logits and FM velocities alike; all the branches run as one batch of
``n_branches * B`` rows (branch-major order).
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

    ``cfg``: text weight (single source: the overall weight; JASCO: ``w_txt``). ``control_cfg``:
    per-control weights of the nested form; empty or None selects no nested guidance. A control present in
    ``controls`` but missing from a non-empty ``control_cfg`` gets weight 1 (used, not amplified); weights
    for absent controls are ignored. ``cfg_all``: JASCO's ``w_all``; set, it selects JASCO's form (with no
    control present ``u(all) = u(text)``, so that is single-source CFG at ``w_all + w_txt``).
    ``control_cfg`` and ``cfg_all`` are exclusive.
    """

    def __init__(self, cfg: float = 1.0, control_cfg: Mapping[str, float] | None = None,
                 controls: Sequence[str] = (), cfg_all: float | None = None) -> None:
        present = list(controls)
        if control_cfg and cfg_all is not None:
            raise ValueError("control_cfg (nested multi-source CFG) and cfg_all (JASCO's form) are exclusive")
        if cfg_all is not None and present:
            self.mode = "jasco"
            self.branches = [Branch(True, frozenset(present)), Branch(True, frozenset()), Branch(False, frozenset())]
            self.weights = [float(cfg_all), float(cfg)]
            return
        if cfg_all is not None:
            cfg = float(cfg) + float(cfg_all)
        if control_cfg:
            self.mode = "nested"
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
        if self.mode == "jasco":
            return jasco_combine(parts[0], parts[1], parts[2], *self.weights)
        return nested_combine(list(parts), self.weights)


def cfg_combine(cond: Tensor, uncond: Tensor, weight: float) -> Tensor:
    """``uncond + w * (cond - uncond)``."""
    return uncond + weight * (cond - uncond)


def jasco_combine(all_: Tensor, text: Tensor, null: Tensor, w_all: float, w_txt: float) -> Tensor:
    """JASCO's multi-source CFG: ``w_all u(all) + w_txt u(text) + (1 - w_all - w_txt) u(null)``."""
    return w_all * all_ + w_txt * text + (1.0 - w_all - w_txt) * null


def nested_combine(outputs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``u_0 + sum_i w_i (u_i - u_{i-1})`` for ``outputs = [u_0, ..., u_n]`` and ``n`` weights."""
    if len(outputs) != len(weights) + 1:
        raise ValueError(f"need len(weights) + 1 outputs, got {len(outputs)} and {len(weights)}")
    out = outputs[0]
    for i, w in enumerate(weights, start=1):
        out = out + w * (outputs[i] - outputs[i - 1])
    return out


def nested_to_jasco(text_weight: float, control_weight: float) -> tuple[float, float]:
    """``(w_all, w_txt)`` of JASCO's form equal to the nested form with text weight ``text_weight`` and one
    weight ``control_weight`` shared by every control."""
    return control_weight, text_weight - control_weight
