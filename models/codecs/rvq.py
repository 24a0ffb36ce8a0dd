"""Training-time residual vector quantization (section 3.2; EnCodec, Défossez et al. 2022; SoundStream).

RVQ: the first codebook quantizes the latent ``z``; codebook ``j`` quantizes the residual
``z - sum_{l<j} zhat_l`` to its nearest codeword in Euclidean distance. Training follows EnCodec/audiocraft:

* codebooks are not learned by gradient descent but by an exponential moving average (EMA) of the vectors
  assigned to each code (k-means-like, VQ-VAE-2): ``N_c <- d N_c + (1-d) n_c``, ``m_c <- d m_c + (1-d) sum x``,
  ``e_c = m_c / N_c`` (Laplace-smoothed);
* codes whose EMA usage ``N_c`` falls below a threshold are dead and are reset to random current residuals;
* the first batch initialises each codebook with k-means;
* the straight-through estimator passes the decoder's gradient to the encoder unchanged: ``z + sg(zhat - z)``;
* the commitment loss pulls the encoder output toward its quantization. Default (``"per_codebook"``, as
  audiocraft): the mean over the codebooks used of ``||r_j - sg(zhat_j)||^2`` with ``r_j = z - sum_{l<j} sg(zhat_l)``
  (every term reaches the encoder: we have no per-codebook projections). ``"full"``: VQ-VAE's term on the
  whole RVQ output ``||z - sg(zhat_1 + ... + zhat_nq)||^2``. On the tiny CPU codec the per-codebook form gave
  1-3 dB better SI-SNR after 220-400 steps (2 seeds, synthetic music and tones).

The codebooks are any modules holding the buffers ``embed [C, D]``, ``embed_avg [C, D]``, ``cluster_size [C]``
and ``inited [1]`` — the layout of ``transformers``' ``EncodecEuclideanCodebook`` and of
:class:`EuclideanCodebook` below — so training writes straight into the weights the inference codec reads.
Under ``torch.distributed`` the assignment statistics are summed over ranks and the resets and k-means
initialisations are broadcast from rank 0, with the same collectives on every rank every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class EuclideanCodebook(nn.Module):
    """A codebook with the same state (buffer names and shapes) as ``transformers``' EnCodec codebook."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.register_buffer("inited", torch.Tensor([False]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", torch.zeros(codebook_size, dim))
        self.register_buffer("embed_avg", torch.zeros(codebook_size, dim))


def _dist() -> tuple[bool, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        ws = torch.distributed.get_world_size()
        return ws > 1, ws
    return False, 1


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if _dist()[0]:
        torch.distributed.all_reduce(t)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if _dist()[0]:
        torch.distributed.broadcast(t, src=0)
    return t


def nearest_code(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Indices of the nearest rows of ``embed [C, D]`` for ``x [N, D]`` (squared Euclidean distance)."""
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
    return dist.argmin(dim=1)


def _sample_rows(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device, generator=generator)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device, generator=generator)
    return x[idx]


def kmeans(x: torch.Tensor, n_codes: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from random data points; empty clusters keep their centre. Returns (centres, counts)."""
    centres = _sample_rows(x, n_codes).clone()
    counts = torch.zeros(n_codes, device=x.device, dtype=x.dtype)
    for _ in range(iters):
        ind = nearest_code(x, centres)
        counts = torch.bincount(ind, minlength=n_codes).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, ind, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres, counts


@dataclass
class RVQOutput:
    quantized: torch.Tensor  # [B, D, T], straight-through: forward = sum of the first n_q codewords
    codes: torch.Tensor  # [B, K, T] codes of ALL K codebooks (the residual chain is always computed)
    commit_loss: torch.Tensor  # scalar commitment loss over the n_q codebooks used
    n_q: int
    usage: torch.Tensor  # [K] fraction of codes used in this batch (per codebook), for logging


class EMAResidualVQ:
    """Residual VQ with EMA codebook updates, dead-code reset, k-means init and a straight-through estimator.

    Holds only hyper-parameters; the state lives in the codebook modules passed to :meth:`__call__`.
    ``dead_code_threshold`` is in EMA assignments per step (a code used less often than that is reset).
    """

    def __init__(self, decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 0.1,
                 kmeans_iters: int = 10, commitment: str = "per_codebook"):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1) (got {decay})")
        if commitment not in ("full", "per_codebook"):
            raise ValueError(f"commitment must be 'full' or 'per_codebook' (got {commitment!r})")
        self.commitment = commitment
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters

    def __call__(self, codebooks: Sequence[nn.Module], z: torch.Tensor, n_q: int | None = None,
                 update: bool = True) -> RVQOutput:
        """Quantize ``z [B, D, T]`` with the first ``n_q`` of ``codebooks`` (all when None).

        When ``update`` (training), every codebook's EMA statistics are updated from its residual — all K of
        them, whatever ``n_q`` is, so that every rank runs the same collectives (quantizer dropout only decides
        what reaches the decoder).
        """
        K = len(codebooks)
        n_q = K if n_q is None else int(n_q)
        if not 1 <= n_q <= K:
            raise ValueError(f"n_q must be in [1, {K}] (got {n_q})")
        B, D, T = z.shape
        residual = z.detach().transpose(1, 2).reshape(-1, D).float()
        q_sum = torch.zeros_like(residual)
        z_flat = z.transpose(1, 2).reshape(-1, D)
        codes = []
        usage = []
        per_codebook: list[torch.Tensor] = []
        for j, cb in enumerate(codebooks):
            if update and not bool(cb.inited.item()):
                self._init(cb, residual)
            embed = cb.embed.to(residual.dtype)
            with torch.no_grad():
                ind = nearest_code(residual, embed)
            q = F.embedding(ind, embed)  # [N, D] (no grad: embed is a buffer)
            if j < n_q:
                if self.commitment == "per_codebook":  # ||(z - sum_{l<j} sg(q_l)) - sg(q_j)||^2
                    per_codebook.append(F.mse_loss(z_flat.float() - q_sum, q.detach()))
                q_sum = q_sum + q
            codes.append(ind.view(B, T))
            usage.append(torch.bincount(ind, minlength=cb.embed.shape[0]).gt(0).float().mean())
            if update:
                self._ema_update(cb, residual, ind)
            residual = residual - q
        quantized_flat = z_flat + (q_sum.to(z_flat.dtype) - z_flat).detach()  # straight-through
        if self.commitment == "full":
            commit = F.mse_loss(z_flat.float(), q_sum.detach())  # ||z - sg(sum_{j<=n_q} zhat_j)||^2
        else:
            commit = torch.stack(per_codebook).mean()
        return RVQOutput(
            quantized=quantized_flat.view(B, T, D).transpose(1, 2),
            codes=torch.stack(codes, dim=1),
            commit_loss=commit,
            n_q=n_q,
            usage=torch.stack(usage),
        )

    @torch.no_grad()
    def _init(self, cb: nn.Module, x: torch.Tensor) -> None:
        C = cb.embed.shape[0]
        centres, counts = kmeans(x, C, self.kmeans_iters)
        centres, counts = _broadcast_(centres.contiguous()), _broadcast_(counts.contiguous())
        counts = counts.clamp(min=1.0)
        cb.embed.copy_(centres)
        cb.cluster_size.copy_(counts)
        cb.embed_avg.copy_(centres * counts[:, None])
        cb.inited.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, cb: nn.Module, x: torch.Tensor, ind: torch.Tensor) -> None:
        C = cb.embed.shape[0]
        counts = torch.bincount(ind, minlength=C).to(x.dtype)
        sums = torch.zeros(C, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, ind, x)
        stats = _all_reduce_(torch.cat([counts[:, None], sums], dim=1))
        counts, sums = stats[:, 0], stats[:, 1:]
        d = self.decay
        cb.cluster_size.mul_(d).add_(counts, alpha=1 - d)
        cb.embed_avg.mul_(d).add_(sums, alpha=1 - d)
        n = cb.cluster_size.sum()
        smoothed = (cb.cluster_size + self.eps) / (n + C * self.eps) * n
        cb.embed.copy_(cb.embed_avg / smoothed[:, None])
        # Dead codes: reset to random current residuals (rank 0's draw), with a fresh unit of usage.
        dead = cb.cluster_size < self.dead_code_threshold
        if self.dead_code_threshold > 0 and bool(dead.any()):
            samples = _broadcast_(_sample_rows(x, C).contiguous())
            cb.embed[dead] = samples[dead]
            cb.cluster_size[dead] = 1.0
            cb.embed_avg[dead] = samples[dead]
