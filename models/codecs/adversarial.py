"""EnCodec's adversarial objective (Défossez et al. 2022, section 3.4): hinge GAN losses and feature matching.

With ``K`` sub-discriminators ``D_k`` (:class:`~arfm.models.codecs.discriminator.MultiScaleSTFTDiscriminator`)
and ``L`` feature layers each, ``x`` the real audio and ``x_hat`` the reconstruction:

* discriminator: ``L_d = 1/K sum_k [ E relu(1 - D_k(x)) + E relu(1 + D_k(x_hat)) ]``,
* generator:     ``l_g = 1/K sum_k E relu(1 - D_k(x_hat))``,
* feature matching (EnCodec's *relative* L1):
  ``l_feat = 1/(KL) sum_k sum_l mean|D_k^l(x) - D_k^l(x_hat)| / mean|D_k^l(x)|``.

``E`` is the mean over the batch and every position of the logits map.

Gradient routing: :class:`AdversarialLoss` returns the three terms so that ONE backward of
``total = reconstruction + w_adv * gen_adv + w_feat * feat + disc`` with ONE optimizer over the generator's and
the discriminator's parameters trains both players (simultaneous GAN updates):

* ``disc`` runs the live discriminator on ``real`` and ``fake.detach()``: its gradient reaches only the
  discriminator's parameters;
* ``gen_adv`` and ``feat`` run the discriminator through ``torch.func.functional_call`` with its parameters
  detached (buffers as they are): their gradient reaches only ``fake`` and through it the generator, never
  the discriminator (the generator cannot "help" the discriminator, and ``disc`` cannot move the generator);
* the real features of feature matching are targets: detached.

Adam is per-parameter, so one Adam over both parameter sets is exactly two Adams with the same
hyperparameters; a checkpoint of the training module therefore holds the discriminator (a submodule) and its
optimizer state together with the rest. The discriminator is evaluated three times per step (real, detached
fake, fake with detached weights); real's forward is shared by ``disc`` and the feature targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def _mean(terms: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(terms).mean()


def hinge_discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k [ E relu(1 - D_k(x)) + E relu(1 + D_k(x_hat)) ]``."""
    return _mean([F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)])


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k E relu(1 - D_k(x_hat))``."""
    return _mean([F.relu(1 - f).mean() for f in fake_logits])


def feature_matching_loss(real_feats: Sequence[Sequence[torch.Tensor]],
                          fake_feats: Sequence[Sequence[torch.Tensor]], eps: float = 1e-8) -> torch.Tensor:
    """EnCodec's relative L1 feature matching: ``mean_{k,l} mean|f_kl(x) - f_kl(x_hat)| / mean|f_kl(x)|``.

    The mean over scales ``k`` and layers ``l`` of the L1 distance between the real and the fake feature maps,
    each divided by the mean absolute value of the real map (``eps`` keeps an all-zero map finite).
    """
    terms = []
    for real_k, fake_k in zip(real_feats, fake_feats, strict=True):
        for r, f in zip(real_k, fake_k, strict=True):
            terms.append((r - f).abs().mean() / (r.abs().mean() + eps))
    return _mean(terms)


class AdversarialLoss(nn.Module):
    """``forward(real [B,1,S], fake [B,1,S]) -> {"gen_adv", "feat", "disc"}`` with the routing described above."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        real_logits, real_feats = self.discriminator(real)
        fake_logits_d, _ = self.discriminator(fake.detach())
        disc = hinge_discriminator_loss(real_logits, fake_logits_d)

        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fake_logits, fake_feats = functional_call(self.discriminator, frozen, (fake,))
        gen_adv = hinge_generator_loss(fake_logits)
        feat = feature_matching_loss([[f.detach() for f in k] for k in real_feats], fake_feats)
        return {"gen_adv": gen_adv, "feat": feat, "disc": disc}
