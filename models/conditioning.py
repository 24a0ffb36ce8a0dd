"""Text and temporally aligned conditioning (sections 4.2, 4.5, figure 2).

* Text: frozen encoder features ``[B, L, Dt]`` are projected to the model width and attended to by
  cross-attention. For classifier-free guidance a learned *null* text embedding replaces the caption
  with probability ``text_dropout`` during training (a one-token memory holding the null vector).
* Controls (chords, melody, drums): integer sequences ``[B, T]`` at the latent frame rate, one
  embedding table per control with ``vocab + 1`` entries, the last being the learned null token.
  Each control is independently replaced by its null with probability ``control_dropout``. The
  embeddings are concatenated on the channel axis with the model input and projected by one linear
  layer (``Linear(Concat(x, C))``) before the transformer. For AR the control of frame ``t`` rides
  with the input of the step that predicts frame ``t``, i.e. one step earlier than that frame's token.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class TextConditioner(nn.Module):
    """``(text [B, L, Dt], mask [B, L]) -> (memory [B, L, dim], mask)``, with the learned null for dropped rows."""

    def __init__(self, text_dim: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, dim)
        self.null = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.null, std=0.02)
        self.dropout = dropout

    def sample_drop(self, batch: int, device, generator: torch.Generator | None = None) -> Tensor:
        """Training-time dropout flags ``[B]`` (True: use the null text)."""
        if self.dropout <= 0:
            return torch.zeros(batch, dtype=torch.bool, device=device)
        return torch.rand(batch, device=device, generator=generator) < self.dropout

    def forward(self, text: Tensor | None, mask: Tensor | None, drop: Tensor | None = None,
                batch: int | None = None) -> tuple[Tensor, Tensor]:
        if text is None:  # unconditional: the null text for every row
            b = batch if batch is not None else 1
            memory = self.null.expand(b, 1, -1)
            return memory, torch.ones(b, 1, dtype=torch.bool, device=memory.device)
        memory = self.proj(text.to(self.proj.weight.dtype))
        b, length = memory.shape[:2]
        mask = torch.ones(b, length, dtype=torch.bool, device=memory.device) if mask is None else mask.bool()
        use_null = ~mask.any(dim=1)  # an empty caption attends to the null text
        if drop is not None:
            use_null = use_null | drop.to(memory.device)
        first = torch.arange(length, device=memory.device) == 0
        null_memory = self.null * first[:, None].to(memory.dtype)  # [L, dim]: null at step 0
        memory = torch.where(use_null[:, None, None], null_memory, memory)
        mask = torch.where(use_null[:, None], first[None], mask)
        return memory, mask


class ControlEmbedder(nn.Module):
    """``{name: long [B, T]} -> [B, T, n_controls * dim]``; a missing or dropped control is its null token."""

    def __init__(self, vocab: Mapping[str, int], dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.names = list(vocab)
        self.vocab = dict(vocab)
        self.dim, self.dropout = dim, dropout
        self.tables = nn.ModuleDict({n: nn.Embedding(v + 1, dim) for n, v in self.vocab.items()})

    @property
    def out_dim(self) -> int:
        return self.dim * len(self.names)

    def null(self, name: str) -> int:
        """Index of the learned null token of control ``name`` (== its vocabulary size)."""
        return self.vocab[name]

    def sample_drop(self, batch: int, device, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Independent per-control training dropout flags ``{name: bool [B]}``."""
        return {n: torch.rand(batch, device=device, generator=generator) < self.dropout for n in self.names}

    def indices(self, controls: Mapping[str, Tensor] | None, batch: int, n_frames: int, device,
                drop: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Control indices ``{name: long [B, T]}`` with the null index where absent or dropped."""
        controls = controls or {}
        out = {}
        for n in self.names:
            c = controls.get(n)
            if c is None:
                out[n] = torch.full((batch, n_frames), self.null(n), dtype=torch.long, device=device)
                continue
            if c.shape[-1] != n_frames:
                raise ValueError(f"control {n!r} has {c.shape[-1]} frames, expected {n_frames}")
            c = c.to(device=device, dtype=torch.long).expand(batch, n_frames)
            if drop is not None and n in drop:
                c = torch.where(drop[n].to(device)[:, None], torch.full_like(c, self.null(n)), c)
            out[n] = c
        return out

    def forward(self, indices: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([self.tables[n](indices[n]) for n in self.names], dim=-1)


def control_frames(embedder: "ControlEmbedder | None", controls: Mapping[str, Tensor] | None, batch: int,
                   n_frames: int, device, drop: Mapping[str, Tensor] | None = None
                   ) -> tuple[dict[str, Tensor] | None, list[str]]:
    """The per-frame control indices a model feeds its embedder (null where absent or dropped), and the names
    of the controls actually given (the sources of multi-source CFG). ``(None, [])`` for a model without
    controls."""
    if embedder is None:
        return None, []
    controls = controls or {}
    present = [n for n in embedder.names if controls.get(n) is not None]
    return embedder.indices(controls, batch, n_frames, device, drop), present


def pad_frames(indices: Mapping[str, Tensor], length: int, nulls: Mapping[str, int]) -> dict[str, Tensor]:
    """Right-pad control indices ``[B, T]`` with each control's null index to ``length`` steps."""
    out = {}
    for n, c in indices.items():
        extra = length - c.shape[-1]
        out[n] = torch.cat([c, c.new_full((c.shape[0], extra), nulls[n])], dim=-1) if extra > 0 else c[:, :length]
    return out
