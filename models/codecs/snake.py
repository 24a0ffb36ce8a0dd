"""The Snake activation (Ziyin et al. 2020; used by DAC / BigVGAN and Stable Audio Open's autoencoder).

``Snake(x) = x + 1 / (alpha + eps) * sin^2(alpha * x)``, with a learnable ``alpha`` per channel (initialised
to 1). A periodic inductive bias that suits audio waveforms; ``x`` is ``[B, C, T]``.

``logscale=True`` stores ``log alpha`` instead (initialised to 0) and uses ``alpha = exp(log alpha)``, as
stable-audio-tools' ``SnakeBeta(alpha_logscale=True)``; it keeps ``alpha`` positive. Default: linear
``alpha`` (DAC's parametrisation).
"""

from __future__ import annotations

import torch
from torch import nn


class Snake(nn.Module):
    def __init__(self, channels: int, *, logscale: bool = False, eps: float = 1e-9):
        super().__init__()
        self.logscale = logscale
        self.eps = eps
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1) if logscale else torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp() if self.logscale else self.alpha
        return x + (alpha * x).sin().pow(2) / (alpha + self.eps)
