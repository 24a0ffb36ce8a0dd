"""Auto-regressive decoder over RVQ tokens with the delay pattern (section 3.2, eq. 1).

Input embedding: one table per codebook (``codebook_size`` codes + the empty/start token, + the
``<a> <c> <b>`` fill-in-the-middle tokens when ``fim``), summed over codebooks. The interleaved
sequence is shifted one step right (start token first) and fed to the causal backbone; four linear
heads give ``p[k, :, s]`` and the loss is eq. (1), the cross-entropy

    L_CE = - mean over valid cells (k, s) of log p[k, q_{k,s}, s]

over the grid cells that hold a real code (cells holding the empty token are excluded).
Temporally aligned controls of frame ``s`` are concatenated with the input of step ``s`` (one step
before the token of frame ``s`` enters the model, figure 2) and projected back to the model width.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .build import ARConfig
from .cfg import Guidance
from .conditioning import ControlEmbedder, TextConditioner, control_frames, pad_frames
from .decoding import MODES, FusedTables, Stepper
from .fim import fim_arrange, fim_restore, prompt_frames
from .patterns import deinterleave, interleave, n_steps, step_frames
from .sampling import Generators, Sampler, entropy
from .spans import as_spans, random_spans
from .transformer import KVCache, Transformer, init_weights


class ARModel(nn.Module):
    """``forward(batch) -> {"loss", "ce_q0".., "acc"}``; :meth:`generate` and :meth:`inpaint` for sampling."""

    paradigm = "ar"

    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        self.config = cfg
        k, card, d = cfg.n_codebooks, cfg.codebook_size, cfg.dim
        self.n_codebooks, self.codebook_size = k, card
        self.empty = card  # the delay pattern's empty cell and the start token
        self.fim_tokens = (card + 1, card + 2, card + 3) if cfg.fim else ()  # <a>, <c>, <b>
        self.embed = nn.ModuleList(nn.Embedding(card + 1 + len(self.fim_tokens), d) for _ in range(k))
        self.text = TextConditioner(cfg.text_dim, d, cfg.text_dropout)
        self.controls = ControlEmbedder(cfg.controls, cfg.control_width, cfg.control_dropout) if cfg.controls else None
        self.in_proj = nn.Linear(d + self.controls.out_dim, d) if self.controls is not None else None
        self.backbone = Transformer(d, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout, causal=True,
                                    unet_skips=bool(cfg.unet_skips))
        self.heads = nn.ModuleList(nn.Linear(d, card, bias=False) for _ in range(k))
        init_weights(self)
        self.decoding = "eager"

    def set_decoding(self, mode: str) -> "ARModel":
        """How :meth:`generate` and :meth:`inpaint` run their cached steps: ``eager``, ``compile`` or
        ``cuda_graphs`` (see :mod:`.decoding`). The tokens are the same; only the speed differs."""
        if mode not in MODES:
            raise ValueError(f"decoding mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "cuda_graphs" and self.device.type != "cuda":
            raise ValueError("cuda_graphs decoding needs the model on a CUDA device")
        self.decoding = mode
        return self

    # ----------------------------------------------------------------------------------------- core
    @property
    def device(self) -> torch.device:
        return self.heads[0].weight.device

    def _inputs(self, seq: Tensor, a: int, b: int) -> Tensor:
        """Model inputs of steps ``[a, b)``: the token of step ``s - 1`` (start token at step 0)."""
        if a == 0:
            start = seq.new_full((seq.shape[0], seq.shape[1], 1), self.empty)
            return torch.cat([start, seq[:, :, : b - 1]], dim=-1)
        return seq[:, :, a - 1 : b - 1]

    def _logits(self, inputs: Tensor, controls: Mapping[str, Tensor] | None, memory: Tensor, memory_mask: Tensor,
                cache: KVCache | None = None, fused: FusedTables | None = None) -> Tensor:
        """``inputs [B, K, s]`` -> logits ``[B, K, s, codebook_size]``.

        ``fused``: the K embedding tables and the K heads as one table and one matrix (:meth:`fused_tables`),
        so that a decoding step looks its K tokens up in one call and computes its K heads in one product.
        """
        if fused is None:
            x = sum(emb(inputs[:, i]) for i, emb in enumerate(self.embed))
        else:
            b, k, s = inputs.shape
            flat = (inputs + fused.offsets).transpose(1, 2).reshape(b * s, k)
            x = F.embedding_bag(flat, fused.table, mode="sum").view(b, s, -1)
        if self.controls is not None:
            x = self.in_proj(torch.cat([x, self.controls(controls).to(x.dtype)], dim=-1))
        h = self.backbone(x, memory, memory_mask, cache)
        if fused is None:
            return torch.stack([head(h) for head in self.heads], dim=1)
        b, s = h.shape[:2]
        return F.linear(h, fused.heads).view(b, s, self.n_codebooks, -1).transpose(1, 2)

    def fused_tables(self) -> FusedTables:
        """The embedding tables and heads concatenated (copies of the weights, made once per decode)."""
        rows = self.embed[0].num_embeddings
        offsets = torch.arange(self.n_codebooks, device=self.device)[:, None] * rows  # [K, 1]
        return FusedTables(torch.cat([e.weight for e in self.embed]), offsets,
                           torch.cat([h.weight for h in self.heads]))

    def _nulls(self) -> dict[str, int]:
        return {n: self.controls.null(n) for n in self.controls.names} if self.controls is not None else {}

    def _control_frames(self, controls, batch: int, n_frames: int, drop=None) -> tuple[dict | None, list[str]]:
        return control_frames(self.controls, controls, batch, n_frames, self.device, drop)

    # ------------------------------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (1) on ``batch["tokens"]`` ``[B, K, T]`` (FIM layout with random spans when ``fim``).

        Optional ``batch["span"] = (start, end)`` fixes the FIM spans (tests, evaluation).
        """
        codes = batch["tokens"].to(self.device).long()
        b, k, t = codes.shape
        drop_text = self.text.sample_drop(b, self.device) if self.training else None
        memory, mask = self.text(batch["text"], batch.get("text_mask"), drop_text)
        drop_ctrl = self.controls.sample_drop(b, self.device) if self.training and self.controls else None
        ctrl, _ = self._control_frames(batch, b, t, drop_ctrl)
        frames = codes
        if self.config.fim:
            if batch.get("span") is not None:
                start, end = as_spans(*batch["span"], b, self.device)
            else:
                start, end = random_spans(b, t, self.config.span_frac, self.config.margin_frac, device=self.device)
            frames = fim_arrange(codes, start, end, self.fim_tokens)
            if ctrl is not None:
                ctrl = {n: fim_arrange(c, start, end, (self.controls.null(n),) * 3) for n, c in ctrl.items()}
        seq = interleave(frames, self.empty, self.config.pattern)
        if ctrl is not None:
            ctrl = pad_frames(ctrl, seq.shape[-1], self._nulls())
        logits = self._logits(self._inputs(seq, 0, seq.shape[-1]), ctrl, memory, mask).float()
        valid = seq < self.codebook_size  # real codes only: not empty cells, not FIM tokens
        target = seq.clamp(max=self.codebook_size - 1)
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none").view_as(seq)
        w = valid.float()
        per_q = (ce * w).sum(dim=(0, 2)) / w.sum(dim=(0, 2)).clamp(min=1)
        loss = (ce * w).sum() / w.sum().clamp(min=1)
        acc = ((logits.argmax(-1) == seq).float() * w).sum() / w.sum().clamp(min=1)
        out = {"loss": loss, "acc": acc.detach()}
        out.update({f"ce_q{i}": per_q[i].detach() for i in range(k)})
        return out

    def step_logits(self, seq: Tensor, text: Tensor, text_mask: Tensor | None,
                    controls: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits ``[B, K, S, card]`` of an interleaved sequence ``[B, K, S]`` (plain layout, no dropout)."""
        b, k, s = seq.shape
        n_frames = s - (n_steps(1, k, self.config.pattern) - 1)
        memory, mask = self.text(text, text_mask)
        ctrl, _ = self._control_frames(controls, b, n_frames)
        if ctrl is not None:
            ctrl = pad_frames(ctrl, s, self._nulls())
        return self._logits(self._inputs(seq.to(self.device), 0, s), ctrl, memory, mask)

    def frame_logits(self, codes: Tensor, text: Tensor, text_mask: Tensor | None,
                     controls: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits ``[B, K, T, card]`` where ``[:, k, j]`` predicts codebook ``k`` of frame ``j``."""
        seq = interleave(codes.long(), self.empty, self.config.pattern)
        return deinterleave(self.step_logits(seq, text, text_mask, controls), codes.shape[-1], self.config.pattern)

    # ------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def _decode(self, prompt: Tensor, n_prompt: int, ctrl: dict | None, present: list[str], text: Tensor,
                text_mask: Tensor | None, *, temperature: float, top_k: int, top_p: float, cfg: float,
                control_cfg: Mapping[str, float] | None, cfg_all: float | None, use_cache: bool, return_entropy: bool,
                generator: Generators) -> tuple[Tensor, Tensor]:
        """Fill an interleaved grid step by step; frames ``< n_prompt`` of ``prompt`` ``[B, K, F]`` are given.

        With the cache, the first free step feeds the whole prefix (prefill) and every later step one token per
        codebook; the cache is allocated for the whole grid up front. The step runs as set by
        :meth:`set_decoding` (eager, ``torch.compile``'d, or a CUDA graph).
        """
        b, k, n_frames = prompt.shape
        dev, pattern = self.device, self.config.pattern
        frame_of = step_frames(n_frames, k, pattern, dev)
        forced = (frame_of < 0) | (frame_of >= n_frames) | (frame_of < n_prompt)  # [K, S]
        seq = interleave(prompt.to(dev).long(), self.empty, pattern)
        s_total = seq.shape[-1]
        guidance = Guidance(cfg, control_cfg, present, cfg_all)
        n = guidance.n
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        memory, mmask = self.text(text.to(dev).repeat(n, 1, 1), text_mask.to(dev).repeat(n, 1),
                                  guidance.text_drop(b, dev))
        if ctrl is not None:
            drops = guidance.control_drop(self.controls.names, b, dev)
            ctrl = {c: torch.where(drops[c][:, None], self.controls.null(c), v.repeat(n, 1)) for c, v in ctrl.items()}
            ctrl = pad_frames(ctrl, s_total, self._nulls())
        free = (~forced).any(dim=0).nonzero()
        entropies: list[Tensor] = []
        if len(free):
            first = int(free[0])
            fused = self.fused_tables()
            step = Stepper(self, s_total, use_cache)
            sampler = Sampler(b, s_total, k, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                              device=dev)
            temp = temperature if temperature > 0 else 1.0
            forced_host = forced.tolist()  # host copies: no device sync inside the loop
            first_forced = forced_host[0]
            any_forced = [any(col) for col in zip(*forced_host)]
            for s in range(first, s_total):
                a = s if (use_cache and s > first) else 0  # with a cache only the new step is fed
                inputs = self._inputs(seq, a, s + 1)
                if n > 1:
                    inputs = inputs.repeat(n, 1, 1)
                c = {name: v[:, a : s + 1] for name, v in ctrl.items()} if ctrl is not None else None
                logits = guidance.combine(step(inputs, c, memory, mmask, fused)[:, :, -1].float())
                if return_entropy and not first_forced[s]:
                    entropies.append(entropy(logits[:, 0], temp))
                tok = sampler(logits, s)
                seq[:, :, s] = torch.where(forced[:, s][None], seq[:, :, s], tok) if any_forced[s] else tok
        ent = torch.stack(entropies, dim=1) if entropies else seq.new_zeros((b, 0), dtype=torch.float32)
        return seq, ent

    @torch.no_grad()
    def generate(self, text: Tensor, text_mask: Tensor | None, n_frames: int,
                 controls: Mapping[str, Tensor] | None = None, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 0.0, cfg: float = 3.0, control_cfg: Mapping[str, float] | None = None,
                 cfg_all: float | None = None, use_cache: bool = True, return_entropy: bool = False,
                 generator: Generators = None) -> Tensor | tuple[Tensor, Tensor]:
        """Sample codes ``[B, K, n_frames]`` from the start token (section 3.2, inference process).

        CFG branches (conditional and null; or multi-source) run as one batch. ``top_k == 1`` is
        greedy. With ``return_entropy`` also returns ``[B, n_frames]``: the entropy (nats) of the
        first codebook's guided, temperature-scaled distribution at each step (appendix I).
        A ``fim`` model generates through its own layout ``[<a>, <c>, <b>, B]`` with an empty context.
        ``generator``: one ``torch.Generator`` for the batch, or one per row so that each row's tokens depend
        on its own generator only (:func:`.sampling.sample_tokens`).
        """
        b = text.shape[0]
        ctrl, present = self._control_frames(controls, b, n_frames)
        prompt = torch.full((b, self.n_codebooks, n_frames), self.empty, dtype=torch.long, device=self.device)
        n_prompt, span = 0, None
        if self.config.fim:
            span = (torch.zeros(b, dtype=torch.long, device=self.device),
                    torch.full((b,), n_frames, dtype=torch.long, device=self.device))
            prompt = fim_arrange(prompt, *span, self.fim_tokens)
            n_prompt = 3
            if ctrl is not None:
                ctrl = {n: fim_arrange(c, *span, (self.controls.null(n),) * 3) for n, c in ctrl.items()}
        seq, ent = self._decode(prompt, n_prompt, ctrl, present, text, text_mask, temperature=temperature,
                                top_k=top_k, top_p=top_p, cfg=cfg, control_cfg=control_cfg, cfg_all=cfg_all,
                                use_cache=use_cache, return_entropy=return_entropy, generator=generator)
        frames = deinterleave(seq, prompt.shape[-1], self.config.pattern)
        codes = fim_restore(frames, *span) if span is not None else frames
        return (codes, ent) if return_entropy else codes

    @torch.no_grad()
    def inpaint(self, codes: Tensor, start, end, text: Tensor, text_mask: Tensor | None,
                controls: Mapping[str, Tensor] | None = None, *, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 0.0, cfg: float = 3.0, control_cfg: Mapping[str, float] | None = None,
                cfg_all: float | None = None, use_cache: bool = True, generator: Generators = None) -> Tensor:
        """Fill-in-the-middle (appendix J): regenerate frames ``[start, end)`` of ``codes`` ``[B, K, T]``.

        The prompt ``[<a>, A, <c>, C, <b>]`` is decoded causally until ``|B| = end - start`` frames
        are generated; frames outside the span are returned unchanged. ``start``/``end`` are ints or
        long ``[B]`` with the same span length for every row. Needs a model trained with ``fim``.
        """
        if not self.config.fim:
            raise ValueError("AR inpainting needs a model trained with fim=True (model.inpainting=fim)")
        codes = codes.to(self.device).long()
        b, _, t = codes.shape
        start, end = as_spans(start, end, b, self.device)
        lengths = (end - start).unique()
        if len(lengths) != 1 or int(end.max()) > t or int(start.min()) < 0:
            raise ValueError("inpainting spans must lie inside the segment and share one length")
        ctrl, present = self._control_frames(controls, b, t)
        if ctrl is not None:
            ctrl = {n: fim_arrange(c, start, end, (self.controls.null(n),) * 3) for n, c in ctrl.items()}
        frames = fim_arrange(codes, start, end, self.fim_tokens)
        n_prompt = prompt_frames(t, int(lengths[0]))
        seq, _ = self._decode(frames, n_prompt, ctrl, present, text, text_mask, temperature=temperature,
                              top_k=top_k, top_p=top_p, cfg=cfg, control_cfg=control_cfg, cfg_all=cfg_all,
                              use_cache=use_cache, return_entropy=False, generator=generator)
        return fim_restore(deinterleave(seq, t + 3, self.config.pattern), start, end)
