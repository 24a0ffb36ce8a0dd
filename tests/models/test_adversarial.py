"""EnCodec's MS-STFT discriminator and adversarial losses (arfm.models.codecs): values and gradient routing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arfm.models.codecs import (AdversarialLoss, MultiScaleSTFTDiscriminator, feature_matching_loss,
                                hinge_discriminator_loss, hinge_generator_loss)


def _tiny_disc() -> MultiScaleSTFTDiscriminator:
    return MultiScaleSTFTDiscriminator(n_ffts=(128, 64, 32), filters=4)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(512) / 8000
    real = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (200.0, 700.0)])[:, None]
    fake = real + 0.3 * torch.randn(real.shape, generator=g)
    return real, fake


def test_discriminator_gives_one_logits_map_and_feature_list_per_scale():
    disc = _tiny_disc()
    logits, feats = disc(torch.randn(2, 1, 512))
    assert len(logits) == len(feats) == 3
    for n_fft, lg, fs in zip((128, 64, 32), logits, feats):
        frames, bins = (512 - n_fft) // (n_fft // 4) + 1, n_fft // 2 + 1
        assert lg.shape[:3] == (2, 1, frames)
        assert len(fs) == 5 and fs[0].shape == (2, 4, frames, bins)  # first conv: full frequency resolution
        assert fs[-1].shape[-1] == lg.shape[-1] == (bins + 7) // 8  # three stride-2 convs on frequency


def test_losses_equal_their_formulas_on_the_discriminator_outputs():
    torch.manual_seed(0)
    disc = _tiny_disc()
    real, fake = _batch()
    out = AdversarialLoss(disc)(real, fake)
    with torch.no_grad():
        rl, rf = disc(real)
        fl, ff = disc(fake)
    K = len(rl)
    disc_hand = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(rl, fl)) / K
    gen_hand = sum(F.relu(1 - f).mean() for f in fl) / K
    rel = [(r - f).abs().mean() / r.abs().mean() for rk, fk in zip(rf, ff) for r, f in zip(rk, fk)]
    feat_hand = sum(rel) / len(rel)
    assert torch.allclose(out["disc"], disc_hand, atol=1e-6)
    assert torch.allclose(out["gen_adv"], gen_hand, atol=1e-6)
    assert torch.allclose(out["feat"], feat_hand, atol=1e-6)
    assert feat_hand > 0
    # the functions themselves on hand-made logits: hinge at +-1
    a, b = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-2.0, 0.5])
    assert torch.isclose(hinge_discriminator_loss([a], [b]), torch.tensor((0 + 1 + 2) / 3 + (0 + 1.5) / 2))
    assert torch.isclose(hinge_generator_loss([b, a]), torch.tensor(((3 + 0.5) / 2 + (0 + 1 + 2) / 3) / 2))
    x, y = torch.tensor([1.0, -3.0]), torch.tensor([2.0, -1.0])
    assert torch.isclose(feature_matching_loss([[x]], [[y]]), torch.tensor(1.5 / 2.0))


def test_gradient_routing_generator_terms_reach_only_fake_and_disc_only_the_discriminator():
    torch.manual_seed(0)
    disc = _tiny_disc()
    adv = AdversarialLoss(disc)
    real, fake0 = _batch()

    fake = fake0.clone().requires_grad_(True)
    out = adv(real, fake)
    (out["gen_adv"] + out["feat"]).backward()
    assert all(p.grad is None or not p.grad.any() for p in disc.parameters())
    assert fake.grad is not None and fake.grad.abs().sum() > 0

    fake = fake0.clone().requires_grad_(True)
    out = adv(real, fake)
    out["disc"].backward()
    assert fake.grad is None
    assert sum(p.grad.abs().sum() for p in disc.parameters() if p.grad is not None) > 0
    assert all(p.grad is not None for p in disc.parameters())


class _ToyGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, 8, 9, padding=4), nn.Tanh(), nn.Conv1d(8, 1, 9, padding=4))

    def forward(self, x):
        return self.net(x)


def test_one_adam_over_both_players_teaches_the_discriminator_to_separate():
    torch.manual_seed(0)
    gen, adv = _ToyGenerator(), AdversarialLoss(_tiny_disc())
    real = 2 * _batch()[0]  # two sines; the generator starts from white noise
    noise = torch.randn_like(real)
    opt = torch.optim.Adam([*gen.parameters(), *adv.parameters()], 3e-3)  # one optimizer, both players
    history = []
    for _ in range(20):
        fake = gen(noise)
        out = adv(real, fake)
        total = (fake - real).abs().mean() + out["gen_adv"] + out["feat"] + out["disc"]
        history.append(float(out["disc"].detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert history[0] > 1.9  # an untrained discriminator: logits near 0, hinge loss near 2
    assert history[-1] < history[0] - 0.3
