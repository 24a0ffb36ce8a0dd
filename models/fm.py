"""Conditional flow matching over continuous latents (section 3.3, eqs. 2-5; appendix J).

Training draws ``y0 ~ N(0, I)``, ``t ~ U[0, 1]``, forms ``x_t = psi_t(y0 | y1)`` on the OT path of
eq. (2) and regresses the network on the target ``y1 - (1 - sigma_min) y0`` with the ``(1 + t)``
weighting of eq. (4) (squared error averaged over frames and channels, then over the batch):

    L = 1/B sum_i (1 + t_i) * || v_theta(x_{t_i}, t_i) - (y1 - (1 - sigma_min) y0) ||^2

The network is the full-attention backbone with U-Net skips; its input is
``Linear(Concat(x_t, controls[, known latent, mask]))`` plus an embedding of ``t``. Sampling
integrates ``dx/dt = v`` from noise at ``t = 0`` to data at ``t = 1`` (eq. 5) with the solvers of
:mod:`.solvers`. Inpainting: supervised (algorithm 2; the model is trained with a mask channel and
the known latent as conditioning, known frames re-imposed at every step) or zero-shot by inversion
(algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .build import FMConfig
from .cfg import Guidance
from .conditioning import ControlEmbedder, TextConditioner, control_frames
from .paths import ot_path
from .solvers import integrate, time_grid
from .spans import as_spans, random_spans, span_mask
from .transformer import Transformer, init_weights, sinusoidal_embedding


class TimestepEmbedding(nn.Module):
    """``t [B] -> [B, dim]``: sinusoidal features of ``1000 t`` through a two-layer MLP.

    Each distinct time is embedded once and the rows are gathered from those: at sampling time every row
    shares one ``t``, so the MLP always sees one row and a row's embedding does not depend on the batch size
    (a CPU matrix product may round differently for 1-3 rows than for more).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        times, index = torch.unique(t, return_inverse=True)
        emb = self.mlp(sinusoidal_embedding(1000.0 * times, self.dim).to(self.mlp[0].weight.dtype))
        return emb[index]


def _randn(shape, generator, device, dtype) -> Tensor:
    """Standard normal noise ``shape = (B, ...)``; ``generator`` is one for the batch or one per row.

    With one generator per row, row ``i`` is drawn from ``generator[i]`` alone, so a request's noise does not
    depend on the other requests of its batch.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != shape[0]:
            raise ValueError(f"{len(gens)} generators for a batch of {shape[0]} rows")
        return torch.stack([_randn(tuple(shape[1:]), g, device, dtype) for g in gens])
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


class FMModel(nn.Module):
    """``forward(batch) -> {"loss", "mse"}``; :meth:`sample` and :meth:`inpaint` integrate the learned field."""

    paradigm = "fm"

    def __init__(self, cfg: FMConfig) -> None:
        super().__init__()
        self.config = cfg
        d, lat = cfg.dim, cfg.latent_dim
        self.latent_dim = lat
        self.supervised = bool(cfg.supervised_inpainting)
        self.text = TextConditioner(cfg.text_dim, d, cfg.text_dropout)
        self.controls = ControlEmbedder(cfg.controls, cfg.control_width, cfg.control_dropout) if cfg.controls else None
        in_dim = lat + (self.controls.out_dim if self.controls is not None else 0) + (lat + 1 if self.supervised else 0)
        self.in_proj = nn.Linear(in_dim, d)
        self.time = TimestepEmbedding(d)
        self.backbone = Transformer(d, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout, causal=False,
                                    unet_skips=bool(cfg.unet_skips))
        self.out = nn.Linear(d, lat)
        init_weights(self)
        self.path = ot_path(cfg.sigma_min)

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.out.weight.dtype

    # ----------------------------------------------------------------------------------------- core
    def velocity(self, x: Tensor, t: Tensor, memory: Tensor, memory_mask: Tensor,
                 controls: Mapping[str, Tensor] | None = None, context: Tensor | None = None) -> Tensor:
        """``v_theta(x_t, t | text, controls, context)``: ``x [B, T, D]``, ``t [B]`` -> ``[B, T, D]``."""
        b, n, _ = x.shape
        parts = [x]
        if self.controls is not None:
            if controls is None:
                controls = self.controls.indices(None, b, n, x.device)
            parts.append(self.controls(controls).to(x.dtype))
        if self.supervised:
            parts.append(context.to(x.dtype) if context is not None else x.new_zeros(b, n, self.latent_dim + 1))
        h = self.in_proj(torch.cat(parts, dim=-1))
        h = h + self.time(t.reshape(-1).expand(b))[:, None].to(h.dtype)
        return self.out(self.backbone(h, memory, memory_mask))

    @staticmethod
    def context(latent: Tensor, known: Tensor) -> Tensor:
        """Supervised-inpainting conditioning ``[B, T, D + 1]``: the known latent (zeros elsewhere) and the mask."""
        k = known[..., None].to(latent.dtype)
        return torch.cat([latent * k, k], dim=-1)

    def _control_frames(self, controls, batch: int, n_frames: int, drop=None) -> tuple[dict | None, list[str]]:
        return control_frames(self.controls, controls, batch, n_frames, self.device, drop)

    # ------------------------------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (4) on ``batch["latent"]`` ``[B, T, D]`` (normalized).

        Optional keys: ``noise`` (y0) and ``t`` fix the randomness; ``known_mask`` ``[B, T]`` fixes the
        supervised-inpainting context (default: a random span is masked per row, appendix J).
        """
        y1 = batch["latent"].to(device=self.device, dtype=self.dtype)
        b, n, _ = y1.shape
        y0 = batch["noise"].to(y1) if batch.get("noise") is not None else torch.randn_like(y1)
        t = batch["t"].to(y1) if batch.get("t") is not None else torch.rand(b, device=y1.device, dtype=y1.dtype)
        sample = self.path.sample(x_0=y0, x_1=y1, t=t)
        x_t, target = sample.x_t, sample.dx_t
        drop_text = self.text.sample_drop(b, self.device) if self.training else None
        memory, mask = self.text(batch["text"], batch.get("text_mask"), drop_text)
        drop_ctrl = self.controls.sample_drop(b, self.device) if self.training and self.controls else None
        ctrl, _ = self._control_frames(batch, b, n, drop_ctrl)
        context, weight = None, torch.ones(b, n, device=y1.device)
        if self.supervised:
            if batch.get("known_mask") is not None:
                known = batch["known_mask"].to(self.device).bool()
            else:
                start, end = random_spans(b, n, self.config.span_frac, self.config.margin_frac, device=self.device)
                known = ~span_mask(start, end, n)
            x_t = torch.where(known[..., None], y1, x_t)  # as at sampling time (algorithm 2)
            context = self.context(y1, known)
            weight = (~known).float()  # learn the field where it is generated
        pred = self.velocity(x_t, t, memory, mask, ctrl, context)
        err = (pred.float() - target.float()).pow(2).mean(dim=-1)
        per_sample = (err * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
        loss = ((1 + t.float()) * per_sample).mean()
        return {"loss": loss, "mse": per_sample.mean().detach()}

    # ------------------------------------------------------------------------------------- sampling
    def guided_field(self, text: Tensor, text_mask: Tensor | None, n_frames: int,
                     controls: Mapping[str, Tensor] | None = None, *, cfg: float = 3.0,
                     control_cfg: Mapping[str, float] | None = None, cfg_all: float | None = None,
                     context: Tensor | None = None,
                     frozen: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``field(x [B, T, D], t) -> v``: the CFG-combined velocity, all branches in one batch.

        ``frozen`` ``[B, T]`` zeroes the velocity of those frames (they keep their initial value).
        """
        b = text.shape[0]
        dev = self.device
        ctrl, present = self._control_frames(controls, b, n_frames)
        g = Guidance(cfg, control_cfg, present, cfg_all)
        n = g.n
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=dev)
        memory, mmask = self.text(text.to(dev).repeat(n, 1, 1), text_mask.to(dev).repeat(n, 1), g.text_drop(b, dev))
        if ctrl is not None:
            drops = g.control_drop(self.controls.names, b, dev)
            ctrl = {c: torch.where(drops[c][:, None], self.controls.null(c), v.repeat(n, 1)) for c, v in ctrl.items()}
        ctx = context.repeat(n, 1, 1) if context is not None else None

        def field(x: Tensor, t: Tensor) -> Tensor:
            tt = torch.as_tensor(t, device=x.device).to(x.dtype).reshape(-1).expand(x.shape[0] * n)
            v = g.combine(self.velocity(x.repeat(n, 1, 1) if n > 1 else x, tt, memory, mmask, ctrl, ctx))
            if frozen is not None:
                v = v.masked_fill(frozen[..., None], 0.0)
            return v

        return field

    def _noise(self, noise: Tensor | None, b: int, n: int, generator) -> Tensor:
        if noise is not None:
            return noise.to(device=self.device, dtype=self.dtype)
        return _randn((b, n, self.latent_dim), generator, self.device, self.dtype)

    @torch.no_grad()
    def sample(self, text: Tensor, text_mask: Tensor | None, n_frames: int,
               controls: Mapping[str, Tensor] | None = None, *, solver: str = "euler", steps: int = 50,
               cfg: float = 3.0, control_cfg: Mapping[str, float] | None = None, cfg_all: float | None = None,
               rtol: float = 1e-5, atol: float = 1e-5, time_shift: float = 1.0, noise: Tensor | None = None,
               generator=None) -> tuple[Tensor, dict]:
        """Integrate from ``y0 ~ N(0, I)`` at ``t = 0`` to ``t = 1``: ``(latent [B, T, D] normalized, info)``.

        ``info``: ``nfe`` (network calls; each runs all CFG branches as one batch), ``solver``, ``steps``.
        ``generator``: one ``torch.Generator`` for the batch's noise, or one per row (row ``i``'s noise then
        depends on ``generator[i]`` only). An adaptive solver (``dopri5``) picks one step size from the error of
        the whole batch, so only fixed-grid solvers keep rows independent of each other.
        """
        b = text.shape[0]
        context = None
        if self.supervised:  # nothing known: plain generation
            context = self.context(torch.zeros(b, n_frames, self.latent_dim, device=self.device, dtype=self.dtype),
                                   torch.zeros(b, n_frames, dtype=torch.bool, device=self.device))
        field = self.guided_field(text, text_mask, n_frames, controls, cfg=cfg, control_cfg=control_cfg,
                                  cfg_all=cfg_all, context=context)
        return integrate(field, self._noise(noise, b, n_frames, generator), solver, steps, time_shift=time_shift,
                         rtol=rtol, atol=atol)

    @torch.no_grad()
    def inpaint(self, latent: Tensor, start, end, text: Tensor, text_mask: Tensor | None,
                controls: Mapping[str, Tensor] | None = None, *, mode: str = "supervised", solver: str = "euler",
                steps: int = 50, cfg: float = 3.0, control_cfg: Mapping[str, float] | None = None,
                cfg_all: float | None = None, rtol: float = 1e-5, atol: float = 1e-5, time_shift: float = 1.0,
                noise: Tensor | None = None, known_mask: Tensor | None = None, generator=None) -> tuple[Tensor, dict]:
        """Regenerate frames ``[start, end)`` of ``latent`` ``[B, T, D]``; the other frames come back exactly.

        ``mode="supervised"`` (algorithm 2, needs a model trained with ``supervised_inpainting``):
        known frames are held at the source latent during integration and passed with the mask as
        conditioning. ``mode="zero_shot"`` (algorithm 1, any model): the source is inverted from
        ``t = 1`` to ``0`` on the solver grid, then integrated forward from fresh noise with the
        known frames replaced by the inverted trajectory at every grid time. ``known_mask``
        ``[B, T]`` (True = keep) overrides ``start``/``end``.
        """
        latent = latent.to(device=self.device, dtype=self.dtype)
        b, n, _ = latent.shape
        if known_mask is None:
            s, e = as_spans(start, end, b, self.device)
            known = ~span_mask(s, e, n)
        else:
            known = known_mask.to(self.device).bool()
        x0 = self._noise(noise, b, n, generator)
        kw = dict(cfg=cfg, control_cfg=control_cfg, cfg_all=cfg_all)
        if mode == "supervised":
            if not self.supervised:
                raise ValueError("supervised inpainting needs a model trained with model.inpainting=supervised; "
                                 "use mode='zero_shot'")
            field = self.guided_field(text, text_mask, n, controls, context=self.context(latent, known),
                                      frozen=known, **kw)
            x, info = integrate(field, torch.where(known[..., None], latent, x0), solver, steps,
                                time_shift=time_shift, rtol=rtol, atol=atol)
        elif mode == "zero_shot":
            context = self.context(torch.zeros_like(latent), torch.zeros_like(known)) if self.supervised else None
            field = self.guided_field(text, text_mask, n, controls, context=context, **kw)
            grid = time_grid(steps, time_shift, device=self.device,
                             dtype=torch.float64 if latent.dtype == torch.float64 else torch.float32)
            traj, info = integrate(field, latent, solver, grid=grid.flip(0), rtol=rtol, atol=atol,
                                   return_intermediates=True)  # inversion: states at t = 1 .. 0
            traj = traj.flip(0)
            nfe, x = info["nfe"], x0
            for i in range(len(grid) - 1):
                x = torch.where(known[..., None], traj[i], x)
                x, step = integrate(field, x, solver, grid=grid[i : i + 2], rtol=rtol, atol=atol)
                nfe += step["nfe"]
            info = {"nfe": nfe, "solver": solver, "steps": len(grid) - 1}
        else:
            raise ValueError(f"mode must be 'supervised' or 'zero_shot', got {mode!r}")
        return torch.where(known[..., None], latent, x), info
