"""The VAE of appendix E.3 ("VAE-GAN"): Stable Audio Open's Oobleck autoencoder recipe, written here.

A symmetric 1-D conv autoencoder with Snake activations and weight-normalised convs, trained with a KL
constraint toward ``N(0, I)`` and no quantization (Evans et al. 2025; stable-audio-tools' ``OobleckEncoder``
/ ``OobleckDecoder`` + ``VAEBottleneck``). Appendix E.3 at 32 kHz: channels [128, 256, 512, 1024, 2048],
latent dimension 64, strides [2,4,4,5,8] (25 Hz), [2,4,4,4,5] (50 Hz) or [2,2,4,4,5] (100 Hz).

Encoder (``n = len(strides)``; ``channels[i]`` is the width after stride ``i``)::

    conv k7: in_channels -> channels[0]
    block i = 0..n-1: 3 residual units at width c_in = channels[max(i-1, 0)]
                      (Snake, conv k7 dilation 1/3/9, Snake, conv k1; x + f(x)),
                      Snake, conv k=2*stride_i stride=stride_i: c_in -> channels[i]
    Snake, conv k3: channels[-1] -> 2 * latent_dim  (mean, log-variance)

so block 0 keeps ``channels[0]`` — the layout of Stable Audio Open's ``c_mults = [1, 1, 2, 4, 8, 16]`` with
``channels = 128``, whose block outputs are exactly E.3's [128, ..., 2048]. The decoder mirrors it with
transposed convs (strides reversed)::

    conv k7: latent_dim -> channels[-1]
    block i = n-1..0: Snake, transposed conv k=2*stride_i stride=stride_i: channels[i] -> channels[max(i-1, 0)],
                      3 residual units
    Snake, conv k7 (no bias): channels[0] -> in_channels     (no tanh: Stable Audio Open's ``final_tanh=False``)

Lengths: the input is zero-padded on the right to a multiple of ``hop_length = prod(strides)``, so the encoder
gives exactly ``T = ceil(S / hop_length)`` frames; the decoder gives ``T * hop_length`` samples (odd strides use
``output_padding = 1``). ``frame_rate = sample_rate / hop_length``.

Posterior ``q(z|x) = N(mean, exp(logvar))`` per frame and latent dimension; ``logvar`` is clamped to
``[LOGVAR_MIN, LOGVAR_MAX] = [-30, 20]`` (as latent-diffusion's ``DiagonalGaussianDistribution``) so
``exp`` never overflows. Stable Audio Open instead parametrises ``std = softplus(scale) + 1e-4``; both give a
diagonal Gaussian and the KL below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .snake import Snake

VAE_STRIDES: dict[int, list[int]] = {25: [2, 4, 4, 5, 8], 50: [2, 4, 4, 4, 5], 100: [2, 2, 4, 4, 5]}
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def vae_strides(frame_rate: float, sample_rate: int = 32000) -> list[int]:
    """Appendix E.3's strides for ``frame_rate`` [Hz] at ``sample_rate`` (32 kHz: 25, 50 or 100 Hz)."""
    for strides in VAE_STRIDES.values():
        if math.isclose(frame_rate, sample_rate / math.prod(strides)):
            return list(strides)
    allowed = sorted(sample_rate / math.prod(s) for s in VAE_STRIDES.values())
    raise ValueError(f"no VAE strides for a {frame_rate} Hz latent at {sample_rate} Hz; allowed frame rates: "
                     + ", ".join(f"{r:g}" for r in allowed))


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, I)) = 0.5 * sum_d (mu^2 + sigma^2 - 1 - log sigma^2)``.

    ``mean``, ``logvar``: ``[B, D, T]``. Summed over the latent dimensions ``D``, averaged over the batch and
    the frames: the KL per latent frame. (stable-audio-tools' ``vae_sample`` computes the same sum without
    the factor 0.5.)
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def _conv(cin: int, cout: int, kernel: int, **kw) -> nn.Module:
    return weight_norm(nn.Conv1d(cin, cout, kernel, **kw))


class ResidualUnit(nn.Module):
    """``x + conv1(Snake(conv7_dilated(Snake(x))))`` at a fixed width."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.layers = nn.Sequential(
            Snake(channels), _conv(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            Snake(channels), _conv(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def _units(channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, d) for d in (1, 3, 9)]


def _down(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(*_units(cin), Snake(cin),
                         _conv(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))


def _up(cin: int, cout: int, stride: int) -> nn.Module:
    up = weight_norm(nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                                        output_padding=stride % 2))
    return nn.Sequential(Snake(cin), up, *_units(cout))


class VAE(nn.Module):
    """``encode``: audio ``[B,1,S]`` -> ``(mean, logvar)`` ``[B,D,T]``; ``decode``: ``[B,D,T]`` -> ``[B,1,T*hop]``."""

    def __init__(self, *, strides: Sequence[int] = (2, 4, 4, 5, 8),
                 channels: Sequence[int] = (128, 256, 512, 1024, 2048), latent_dim: int = 64,
                 sample_rate: int = 32000, in_channels: int = 1):
        super().__init__()
        if len(strides) != len(channels):
            raise ValueError(f"one width per stride: {len(strides)} strides, {len(channels)} channels")
        self.strides = list(strides)
        self.channels = list(channels)
        self.latent_dim = latent_dim
        self.sample_rate = sample_rate
        self.in_channels = in_channels
        widths_in = [channels[0]] + list(channels[:-1])  # width entering block i

        enc = [_conv(in_channels, channels[0], 7, padding=3)]
        enc += [_down(widths_in[i], channels[i], s) for i, s in enumerate(strides)]
        enc += [Snake(channels[-1]), _conv(channels[-1], 2 * latent_dim, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec = [_conv(latent_dim, channels[-1], 7, padding=3)]
        dec += [_up(channels[i], widths_in[i], strides[i]) for i in reversed(range(len(strides)))]
        dec += [Snake(channels[0]), _conv(channels[0], in_channels, 7, padding=3, bias=False)]
        self.decoder = nn.Sequential(*dec)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B,1,S] -> (mean, logvar)``, each ``[B, latent_dim, ceil(S / hop_length)]``."""
        if audio.dim() == 2:
            audio = audio[:, None]
        pad = -audio.shape[-1] % self.hop_length
        if pad:
            audio = F.pad(audio, (0, pad))
        mean, logvar = self.encoder(audio).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def posterior_sample(mean: torch.Tensor, logvar: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparametrised draw ``mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def encode_latent(self, audio: torch.Tensor, sample: bool | None = None) -> torch.Tensor:
        """``[B,1,S] -> [B,D,T]``: the posterior mean if ``sample`` is False (or None in eval mode), else a draw."""
        mean, logvar = self.encode(audio)
        if sample is None:
            sample = self.training
        return self.posterior_sample(mean, logvar) if sample else mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim, T] -> [B, in_channels, T * hop_length]``."""
        return self.decoder(z)
