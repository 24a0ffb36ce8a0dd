"""EnCodec's multi-scale STFT (MS-STFT) discriminator (Défossez et al. 2022, section 3.4).

Each sub-discriminator ``D_k`` looks at the complex STFT of the waveform at one scale (``n_fft_k``, hop
``n_fft_k / 4``, Hann window of length ``n_fft_k``), its real and imaginary parts stacked as two input channels
of a 2-D image laid out ``[B, 2, time, freq]``:

* a first 2-D conv (kernel (3, 9) over (time, freq)) to ``filters`` channels,
* three convs with kernel (3, 9), dilation 1, 2, 4 on the time axis and stride 2 on the frequency axis,
* a conv with kernel (3, 3),
* each followed by LeakyReLU(0.2); their outputs are the feature maps ``D_k^l(x)`` used by feature matching,
* a final (3, 3) conv to one channel: the logits map ``D_k(x)`` (no activation).

Every conv has ``filters`` channels (EnCodec: 32 throughout; audiocraft's ``filters_scale=1``) and is
weight-normalised. The STFT is ``normalized`` (divided by the window's norm) and not centred,
as in audiocraft; inputs shorter than the largest ``n_fft`` are zero-padded on the right up to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _conv2d(cin: int, cout: int, kernel: tuple[int, int], stride=(1, 1), dilation=(1, 1)) -> nn.Module:
    padding = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))  # "same" size along strided axes / stride
    return weight_norm(nn.Conv2d(cin, cout, kernel, stride=stride, dilation=dilation, padding=padding))


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator: ``audio [B,1,S] -> (logits [B,1,T',F'], [features])``."""

    def __init__(self, n_fft: int, *, filters: int = 32, kernel_size=(3, 9), dilations: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        kt = kernel_size[0]
        convs = [_conv2d(2, filters, kernel_size)]
        convs += [_conv2d(filters, filters, kernel_size, stride=(1, 2), dilation=(d, 1)) for d in dilations]
        convs.append(_conv2d(filters, filters, (kt, kt)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = _conv2d(filters, 1, (kt, kt))
        self.activation = nn.LeakyReLU(0.2)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B,1,S] -> [B, 2, frames, n_fft/2+1]``: real and imaginary parts of the normalised STFT."""
        x = audio.reshape(-1, audio.shape[-1])
        if x.shape[-1] < self.n_fft:
            x = nn.functional.pad(x, (0, self.n_fft - x.shape[-1]))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.n_fft, self.window.to(x.dtype), center=False,
                          normalized=True, return_complex=True)  # [B, F, T]
        return torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            z = self.activation(conv(z))
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """``forward(audio [B,1,S]) -> (logits, features)``: one logits map and one feature list per scale.

    ``n_ffts`` are the STFT sizes of the sub-discriminators (EnCodec uses five scales); ``filters`` is the width
    of the first conv (EnCodec: 32).
    """

    def __init__(self, n_ffts: Sequence[int] = (1024, 512, 256, 128, 64), *, filters: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, filters=filters) for n in n_ffts)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if audio.dim() == 2:
            audio = audio[:, None]
        logits, features = [], []
        for disc in self.discriminators:
            lg, ft = disc(audio)
            logits.append(lg)
            features.append(ft)
        return logits, features
