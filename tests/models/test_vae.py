"""Appendix E.3's VAE (arfm.models.codecs.vae) and its training objective: shapes, KL, posterior, state, learning."""

from __future__ import annotations

import pytest
import torch

from arfm.models.codecs import (VAE, VAE_STRIDES, AdversarialLoss, MultiScaleSTFTDiscriminator, Snake,
                                VAETrainingModel, kl_divergence, vae_strides)

TINY = (4, 4, 4, 4, 4)


@pytest.mark.parametrize("frame_rate,strides,hop,frames", [  # appendix E.3's table
    (25, [2, 4, 4, 5, 8], 1280, 250), (50, [2, 4, 4, 4, 5], 640, 500), (100, [2, 2, 4, 4, 5], 320, 1000)])
def test_latent_shape_per_frame_rate_for_ten_seconds_at_32khz(frame_rate, strides, hop, frames):
    assert vae_strides(frame_rate) == VAE_STRIDES[frame_rate] == strides
    vae = VAE(strides=vae_strides(frame_rate), channels=TINY).eval()
    assert vae.hop_length == hop and vae.frame_rate == frame_rate
    with torch.no_grad():
        mean, logvar = vae.encode(torch.randn(1, 1, 320000))
        assert mean.shape == logvar.shape == (1, 64, frames)
        assert vae.decode(mean).shape == (1, 1, 320000)


def test_lengths_pad_to_whole_frames_and_unknown_frame_rates_are_refused():
    vae = VAE(strides=vae_strides(50), channels=TINY)
    mean, _ = vae.encode(torch.randn(2, 1, 641))  # ceil(641 / 640) = 2 frames
    assert mean.shape == (2, 64, 2)
    assert vae.decode(torch.randn(2, 64, 3)).shape == (2, 1, 3 * 640)
    with pytest.raises(ValueError, match="25, 50, 100"):
        vae_strides(30)


def test_kl_divergence_equals_its_closed_form():
    mean = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])  # [B=1, D=2, T=2]
    logvar = torch.tensor([[[0.0, 0.0], [1.0, -2.0]]])
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) per element
    per = [[0.0, 0.5], [0.5 * (4 + torch.e - 1 - 1), 0.5 * (1 + torch.exp(torch.tensor(-2.0)).item() - 1 + 2)]]
    expected = (per[0][0] + per[1][0] + per[0][1] + per[1][1]) / 2  # sum over D, mean over the 2 frames
    assert torch.isclose(kl_divergence(mean, logvar), torch.tensor(expected, dtype=torch.float32))
    assert kl_divergence(torch.zeros(3, 4, 5), torch.zeros(3, 4, 5)) == 0  # the prior itself


def test_snake_is_x_plus_sin_squared_over_alpha():
    snake = Snake(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1))
    x = torch.linspace(-3, 3, 7).view(1, 1, 7).repeat(1, 2, 1)
    expected = torch.stack([x[0, 0] + torch.sin(x[0, 0]) ** 2, x[0, 1] + torch.sin(2 * x[0, 1]) ** 2 / 2])
    assert torch.allclose(snake(x)[0], expected, atol=1e-6)
    log = Snake(2, logscale=True)
    assert torch.allclose(log(x), Snake(2)(x))  # log alpha = 0 is alpha = 1


def test_encode_latent_is_the_posterior_mean_in_eval_and_draws_around_it_when_sampling():
    torch.manual_seed(0)
    vae = VAE(strides=(2, 4), channels=(4, 8), latent_dim=8)
    audio = torch.randn(1, 1, 64)
    vae.eval()
    with torch.no_grad():
        mean, logvar = vae.encode(audio)
        a, b = vae.encode_latent(audio), vae.encode_latent(audio)
        assert torch.equal(a, b) and torch.equal(a, mean)
        assert torch.equal(vae.encode_latent(audio, sample=False), mean)
        draws = vae.encode_latent(audio.repeat(4000, 1, 1), sample=True)  # 4000 draws for the same audio
    std = torch.exp(0.5 * logvar)
    assert not torch.equal(draws[0], draws[1])
    assert torch.allclose(draws.mean(0), mean, atol=0.1 * std.max().item())
    assert torch.allclose(draws.std(0), std, rtol=0.1)
    vae.train()  # sample=None in training mode draws
    with torch.no_grad():
        assert not torch.equal(vae.encode_latent(audio), vae.encode_latent(audio))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(VAE.posterior_sample(mean, logvar, g1), VAE.posterior_sample(mean, logvar, g2))


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    kw = dict(strides=vae_strides(100), channels=TINY, latent_dim=16)
    vae = VAE(**kw).eval()
    with torch.no_grad():
        for snake in (m for m in vae.modules() if isinstance(m, Snake)):
            snake.alpha.uniform_(0.5, 2.0)  # non-default state must travel too
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    torch.manual_seed(1)
    fresh = VAE(**kw).eval()
    fresh.load_state_dict(torch.load(tmp_path / "vae.pt", weights_only=True))
    audio = torch.randn(2, 1, 1000)
    with torch.no_grad():
        assert torch.equal(fresh.encode(audio)[0], vae.encode(audio)[0])
        assert torch.equal(fresh.decode(vae.encode_latent(audio)), vae.decode(vae.encode_latent(audio)))


def _tones(n: int = 2048, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(n) / sr
    return torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 330.0, 440.0, 550.0)])[:, None]


def test_vae_training_model_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    vae = VAE(strides=(2, 4), channels=(8, 16), latent_dim=8, sample_rate=16000)
    model = VAETrainingModel(vae, 16000, stft_fft_sizes=(256, 128))
    assert model.autoencoder is vae and model.discriminator is None
    audio = _tones()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    history = []
    for _ in range(30):
        out = model({"audio": audio})
        history.append({k: float(v.detach()) for k, v in out.items()})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert set(history[0]) == {"loss", "l1", "stft", "kl"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["l1"] < history[0]["l1"]
    first = history[0]
    assert first["loss"] == pytest.approx(first["l1"] + first["stft"] + 1e-3 * first["kl"], rel=1e-5)


def test_vae_training_model_adds_the_adversarial_terms():
    torch.manual_seed(0)
    vae = VAE(strides=(2, 4), channels=(4, 4), latent_dim=4, sample_rate=16000)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(256, 64), filters=4)
    model = VAETrainingModel(vae, 16000, stft_fft_sizes=(256,), adversarial=AdversarialLoss(disc),
                             adv_weight=0.5, feat_weight=2.0)
    assert model.discriminator is disc
    assert any(k.startswith("adversarial.discriminator.") for k in model.state_dict())
    out = model({"audio": _tones(1024)})
    assert {"loss", "l1", "stft", "kl", "gen_adv", "feat", "disc"} == set(out)
    expected = out["l1"] + out["stft"] + 1e-3 * out["kl"] + 0.5 * out["gen_adv"] + 2.0 * out["feat"] + out["disc"]
    assert torch.allclose(out["loss"].detach(), expected, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in disc.parameters())
    with torch.no_grad():  # training decodes a posterior draw, eval the posterior mean
        assert not torch.equal(model({"audio": _tones(1024)})["l1"], model({"audio": _tones(1024)})["l1"])
        model.eval()
        assert torch.equal(model({"audio": _tones(1024)})["l1"], model({"audio": _tones(1024)})["l1"])
