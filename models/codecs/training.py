"""The EnCodec training objective as one module: ``CodecTrainingModel(batch) -> {"loss", ...}``.

Encoder -> residual VQ (EMA codebooks, :mod:`arfm.models.codecs.rvq`) -> decoder, trained with

* a time-domain L1 loss ``|x - x_hat|``,
* a multi-resolution mel-spectrogram loss (``auraloss.freq.MultiResolutionSTFTLoss`` with a mel scale:
  spectral convergence + log-magnitude L1 + linear-magnitude L1 at several FFT sizes), close in spirit to
  audiocraft's multi-scale mel loss,
* the commitment loss of the RVQ (weight ``commitment_weight``).

Two augmentations of the quantizer bottleneck make one autoencoder serve both paradigms:

* quantizer dropout (SoundStream / EnCodec): each batch uses a random number ``n_q ~ U{1..K}`` of codebooks,
  so the first codebooks carry the most information;
* pass-through: with probability ``passthrough_prob`` per sample the decoder receives the continuous,
  pre-quantizer latent instead of its quantization, so the decoder learns to decode the latents that flow
  matching generates (appendix B samples EnCodec "without quantization").

Optionally (``adversarial``, an :class:`~arfm.models.codecs.adversarial.AdversarialLoss` around a
:class:`~arfm.models.codecs.discriminator.MultiScaleSTFTDiscriminator`) EnCodec's GAN terms are added:

    loss += adv_weight * l_g + feat_weight * l_feat + L_d

with the hinge generator loss ``l_g``, the relative feature-matching loss ``l_feat`` and the discriminator's
hinge loss ``L_d``, routed so that one backward and one optimizer train both players (see
:mod:`~arfm.models.codecs.adversarial`); the discriminator is then a submodule, in ``state_dict()``. Defaults
``adv_weight = feat_weight = 3`` are EnCodec's lambda_g = lambda_feat = 3 (section 4; EnCodec applies them
through its loss balancer, which this objective does not have). Without ``adversarial`` the objective is
reconstruction-only, so reconstructions are smoother/duller than the paper's EnCodec.
In ``eval()`` mode all K codebooks are used, no pass-through, and the codebooks are not updated.

``autoencoder`` is any module with ``.encoder`` (audio ``[B,1,S]`` -> ``[B,D,T]``), ``.decoder`` (the inverse)
and ``.quantizer.layers[k].codebook`` (modules with the EMA buffers); ``transformers``' ``EncodecModel``
is one. Pure PyTorch: no I/O.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from .rvq import EMAResidualVQ


def mel_stft_loss(sample_rate: int, fft_sizes=(512, 1024, 2048), n_mels: int = 64) -> nn.Module:
    """Multi-resolution mel STFT loss from ``auraloss`` (hop = n_fft/4, Hann window)."""
    from auraloss.freq import MultiResolutionSTFTLoss

    loss = MultiResolutionSTFTLoss(
        fft_sizes=list(fft_sizes), hop_sizes=[n // 4 for n in fft_sizes], win_lengths=list(fft_sizes),
        scale="mel", n_bins=n_mels, sample_rate=sample_rate, w_sc=1.0, w_log_mag=1.0, w_lin_mag=1.0,
    )
    for stft_loss in loss.stft_losses:  # auraloss always computes the phase (unused here, ~15% of a CPU step)
        stft_loss.stft = types.MethodType(_magnitude_only_stft, stft_loss)
    return loss


def _magnitude_only_stft(self, x: torch.Tensor):
    """auraloss ``STFTLoss.stft`` without the phase (returned as None; only used when ``w_phs > 0``)."""
    spec = torch.stft(x, self.fft_size, self.hop_size, self.win_length, self.window.to(x.device),
                      return_complex=True)
    return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=self.eps)), None


class CodecTrainingModel(nn.Module):
    def __init__(
        self,
        autoencoder: nn.Module,
        sample_rate: int,
        *,
        commitment_weight: float = 1.0,
        l1_weight: float = 1.0,
        mel_weight: float = 1.0,
        quantizer_dropout: bool = True,
        passthrough_prob: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.1,
        commitment: str = "per_codebook",
        mel_fft_sizes=(512, 1024, 2048),
        n_mels: int = 64,
        adversarial: nn.Module | None = None,
        adv_weight: float = 3.0,
        feat_weight: float = 3.0,
    ):
        super().__init__()
        self.autoencoder = autoencoder
        self.sample_rate = sample_rate
        self.commitment_weight = commitment_weight
        self.l1_weight = l1_weight
        self.mel_weight = mel_weight
        self.quantizer_dropout = quantizer_dropout
        self.passthrough_prob = passthrough_prob
        self.rvq = EMAResidualVQ(decay=ema_decay, dead_code_threshold=dead_code_threshold, commitment=commitment)
        self.mel_loss = mel_stft_loss(sample_rate, mel_fft_sizes, n_mels)
        self.adversarial = adversarial
        self.adv_weight = adv_weight
        self.feat_weight = feat_weight

    @property
    def discriminator(self) -> nn.Module | None:
        return None if self.adversarial is None else self.adversarial.discriminator

    @property
    def codebooks(self) -> list[nn.Module]:
        return [layer.codebook for layer in self.autoencoder.quantizer.layers]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        if audio.dim() == 2:
            audio = audio[:, None]
        S = audio.shape[-1]
        z = self.autoencoder.encoder(audio)  # [B, D, T]
        K = len(self.codebooks)
        training = self.training
        if training and self.quantizer_dropout:
            n_q = int(torch.randint(1, K + 1, (1,)).item())
        else:
            n_q = K
        out = self.rvq(self.codebooks, z, n_q=n_q, update=training)
        latent = out.quantized
        if training and self.passthrough_prob > 0:
            keep = torch.rand(z.shape[0], 1, 1, device=z.device) < self.passthrough_prob
            latent = torch.where(keep, z, latent)
        recon = self.autoencoder.decoder(latent)[..., :S]
        if recon.shape[-1] < S:
            recon = F.pad(recon, (0, S - recon.shape[-1]))
        l1 = (recon - audio).abs().mean()
        mel = self.mel_loss(recon, audio)
        loss = self.l1_weight * l1 + self.mel_weight * mel + self.commitment_weight * out.commit_loss
        metrics = {
            "l1": l1.detach(),
            "mel": mel.detach(),
            "commit": out.commit_loss.detach(),
            "n_q": torch.tensor(float(out.n_q), device=z.device),
            "codebook_usage": out.usage.mean().detach(),
        }
        if self.adversarial is not None:
            adv = self.adversarial(audio, recon)
            loss = loss + self.adv_weight * adv["gen_adv"] + self.feat_weight * adv["feat"] + adv["disc"]
            metrics.update({k: v.detach() for k, v in adv.items()})
        return {"loss": loss, **metrics}
