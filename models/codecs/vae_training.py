"""The VAE-GAN training objective of appendix E.3 as one module: ``VAETrainingModel(batch) -> {"loss", ...}``.

Stable Audio Open's autoencoder recipe (stable-audio-tools), for ``x`` the audio and ``x_hat`` the decoding of
a posterior draw ``z ~ q(z|x)`` (the posterior mean in ``eval()`` mode)::

    loss = l1_weight * mean|x - x_hat| + stft_weight * MRSTFT(x_hat, x) + kl_weight * KL(q(z|x) || N(0, I))
           [+ adv_weight * gen_adv + feat_weight * feat + disc]

* ``MRSTFT``: ``auraloss.freq.MultiResolutionSTFTLoss`` on linear-frequency magnitudes (spectral
  convergence + log-magnitude L1, auraloss's defaults, as stable-audio-tools' ``mrstft``), FFT sizes
  ``stft_fft_sizes``, hop = n_fft/4, window = n_fft. Stable Audio Open also A-weights the signals first
  (``perceptual_weighting=True`` here, off by default: its FIR prefilter costs CPU time and matters little
  for the mono, small-scale runs). The phase, which auraloss always computes, is skipped.
* ``KL``: :func:`~arfm.models.codecs.vae.kl_divergence`, per latent frame.
* the adversarial terms of :mod:`~arfm.models.codecs.adversarial` when ``adversarial`` is given (an
  :class:`~arfm.models.codecs.adversarial.AdversarialLoss`; its discriminator is then part of this module's
  parameters and ``state_dict``, trained by the same optimizer through the gradient routing described there).

Defaults: ``kl_weight = 1e-3`` is the paper's alpha_KL (appendix E.3). stable-audio-tools applies its weight to
``sum(mu^2 + sigma^2 - log sigma^2 - 1)``, twice the KL used here, so ``kl_weight = 2e-3`` would match the
paper's pressure exactly. ``adv_weight = 0.1`` and ``feat_weight = 5.0`` are Stable Audio Open's autoencoder
weights; ``l1_weight = 1.0`` keeps a time-domain term (Stable Audio Open's config uses 0 - 0.1).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from .training import _magnitude_only_stft
from .vae import VAE, kl_divergence


def stft_loss(fft_sizes, sample_rate: int | None = None, perceptual_weighting: bool = False) -> nn.Module:
    """Linear-frequency multi-resolution STFT loss from ``auraloss`` (hop = n_fft/4, Hann window, no phase)."""
    from auraloss.freq import MultiResolutionSTFTLoss

    loss = MultiResolutionSTFTLoss(
        fft_sizes=list(fft_sizes), hop_sizes=[n // 4 for n in fft_sizes], win_lengths=list(fft_sizes),
        sample_rate=sample_rate, perceptual_weighting=perceptual_weighting)
    for single in loss.stft_losses:
        single.stft = types.MethodType(_magnitude_only_stft, single)
    return loss


class VAETrainingModel(nn.Module):
    def __init__(
        self,
        vae: VAE,
        sample_rate: int,
        *,
        kl_weight: float = 1e-3,
        l1_weight: float = 1.0,
        stft_weight: float = 1.0,
        adversarial: nn.Module | None = None,
        adv_weight: float = 0.1,
        feat_weight: float = 5.0,
        stft_fft_sizes=(2048, 1024, 512, 256, 128),
        perceptual_weighting: bool = False,
        stft_scale: str = "linear",
    ):
        super().__init__()
        self.autoencoder = vae
        self.sample_rate = sample_rate
        self.kl_weight = kl_weight
        self.l1_weight = l1_weight
        self.stft_weight = stft_weight
        self.adversarial = adversarial
        self.adv_weight = adv_weight
        self.feat_weight = feat_weight
        if stft_scale == "mel":  # the codec's multi-resolution mel loss (see VAEConfig.stft_scale)
            from .training import mel_stft_loss

            self.stft_loss = mel_stft_loss(sample_rate)
        elif stft_scale == "linear":
            self.stft_loss = stft_loss(stft_fft_sizes, sample_rate, perceptual_weighting)
        else:
            raise ValueError(f"stft_scale must be 'linear' or 'mel' (got {stft_scale!r})")

    @property
    def discriminator(self) -> nn.Module | None:
        return None if self.adversarial is None else self.adversarial.discriminator

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        if audio.dim() == 2:
            audio = audio[:, None]
        S = audio.shape[-1]
        mean, logvar = self.autoencoder.encode(audio)
        z = self.autoencoder.posterior_sample(mean, logvar) if self.training else mean
        recon = self.autoencoder.decode(z)[..., :S]
        if recon.shape[-1] < S:
            recon = F.pad(recon, (0, S - recon.shape[-1]))
        l1 = (recon - audio).abs().mean()
        stft = self.stft_loss(recon, audio)
        kl = kl_divergence(mean, logvar)
        loss = self.l1_weight * l1 + self.stft_weight * stft + self.kl_weight * kl
        out = {"l1": l1.detach(), "stft": stft.detach(), "kl": kl.detach()}
        if self.adversarial is not None:
            adv = self.adversarial(audio, recon)
            loss = loss + self.adv_weight * adv["gen_adv"] + self.feat_weight * adv["feat"] + adv["disc"]
            out.update({k: v.detach() for k, v in adv.items()})
        return {"loss": loss, **out}
