"""Training-time residual VQ and the codec objective (arfm.models.codecs): pure torch, no files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arfm.models.codecs import (AdversarialLoss, CodecTrainingModel, EMAResidualVQ, EuclideanCodebook,
                                MultiScaleSTFTDiscriminator, kmeans, nearest_code)


def _codebooks(k: int, size: int, dim: int, seed: int = 0, inited: bool = True) -> list[EuclideanCodebook]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        cb = EuclideanCodebook(size, dim)
        cb.embed.copy_(torch.randn(size, dim, generator=g))
        cb.embed_avg.copy_(cb.embed)
        cb.cluster_size.fill_(1.0)
        cb.inited.fill_(float(inited))
        out.append(cb)
    return out


def test_rvq_forward_is_residual_quantization_and_backward_is_straight_through():
    torch.manual_seed(0)
    cbs = _codebooks(3, 16, 4)
    z = torch.randn(2, 4, 5, requires_grad=True)
    out = EMAResidualVQ()(cbs, z, n_q=3, update=False)
    # forward value: the sum of the chosen codewords, each the nearest to the running residual
    residual = z.detach().transpose(1, 2).reshape(-1, 4)
    expected = torch.zeros_like(residual)
    for j, cb in enumerate(cbs):
        ind = nearest_code(residual, cb.embed)
        assert torch.equal(ind.view(2, 5), out.codes[:, j])
        expected += cb.embed[ind]
        residual = residual - cb.embed[ind]
    assert torch.allclose(out.quantized.detach().transpose(1, 2).reshape(-1, 4), expected, atol=1e-6)
    # backward: d quantized / d z is the identity (straight-through estimator)
    g = torch.randn_like(z)
    (out.quantized * g).sum().backward()
    assert torch.allclose(z.grad, g)


def test_rvq_n_q_uses_only_the_first_codebooks():
    cbs = _codebooks(4, 8, 3)
    z = torch.randn(1, 3, 6)
    one = EMAResidualVQ()(cbs, z, n_q=1, update=False)
    assert torch.allclose(one.quantized.transpose(1, 2).reshape(-1, 3), cbs[0].embed[one.codes[0, 0]])
    assert one.codes.shape == (1, 4, 6)  # all K codes are still computed


def test_ema_update_moves_assigned_codes_toward_their_vectors_and_resets_dead_codes():
    torch.manual_seed(0)
    cb = _codebooks(1, 4, 2, inited=True)[0]
    cb.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [50.0, 50.0]]))
    cb.embed_avg.copy_(cb.embed)
    cb.cluster_size.copy_(torch.tensor([1.0, 1.0, 1.0, 0.01]))  # code 3 is dead
    target0, target1 = torch.tensor([1.0, 2.0]), torch.tensor([8.0, 11.0])
    x = torch.cat([target0 + 0.01 * torch.randn(50, 2), target1 + 0.01 * torch.randn(50, 2)])
    z = x.t().reshape(1, 2, 100)
    before = cb.embed.clone()
    vq = EMAResidualVQ(decay=0.5, dead_code_threshold=0.1)
    vq([cb], z, update=True)
    assert (cb.embed[0] - target0).norm() < (before[0] - target0).norm()
    assert (cb.embed[1] - target1).norm() < (before[1] - target1).norm()
    # the dead code was replaced by one of the current vectors
    assert torch.cdist(cb.embed[3:4], x).min() < 1e-5
    for _ in range(30):  # unused codes keep being reset, so which code holds a cluster may change
        vq([cb], z, update=True)
    assert torch.cdist(torch.stack([target0, target1]), cb.embed).min(dim=1).values.max() < 0.05


def test_no_update_in_eval_mode_leaves_codebooks_unchanged():
    cbs = _codebooks(2, 8, 3)
    state = [cb.embed.clone() for cb in cbs]
    EMAResidualVQ()(cbs, torch.randn(2, 3, 7), update=False)
    assert all(torch.equal(a, cb.embed) for a, cb in zip(state, cbs))


def test_kmeans_initialises_uninitialised_codebooks_on_first_batch():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = centres.repeat(40, 1) + 0.05 * torch.randn(120, 2)
    found, counts = kmeans(x, 3, iters=20)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.1
    assert counts.sum() == 120
    cb = _codebooks(1, 3, 2, inited=False)[0]
    EMAResidualVQ()([cb], x.t().reshape(1, 2, 120), update=True)
    assert cb.inited.item() == 1.0
    assert torch.cdist(centres, cb.embed).min(dim=1).values.max() < 0.5


@pytest.mark.parametrize("mode,ratio", [("full", 0.05), ("per_codebook", 0.7)])
def test_commitment_loss_decreases_when_the_encoder_output_is_optimised(mode, ratio):
    torch.manual_seed(0)
    cbs = _codebooks(2, 8, 4)
    z = nn.Parameter(torch.randn(2, 4, 10) * 3)
    opt = torch.optim.SGD([z], lr=10.0)  # the loss is a mean over 80 elements
    vq = EMAResidualVQ(commitment=mode)
    losses = []
    for _ in range(20):
        out = vq(cbs, z, update=False)
        losses.append(out.commit_loss.item())
        opt.zero_grad()
        out.commit_loss.backward()
        opt.step()
    # "full" reaches its quantization; the per-codebook terms pull toward nested partial sums (a floor > 0)
    assert losses[-1] < ratio * losses[0]
    assert losses[5] < losses[0]


class _ToyAutoencoder(nn.Module):
    """Same attribute layout as transformers' EncodecModel: encoder, decoder, quantizer.layers[k].codebook."""

    def __init__(self, dim: int = 8, hop: int = 16, k: int = 3, size: int = 32):
        super().__init__()
        self.encoder = nn.Conv1d(1, dim, hop, stride=hop)
        self.decoder = nn.ConvTranspose1d(dim, 1, hop, stride=hop)
        self.quantizer = nn.Module()
        self.quantizer.layers = nn.ModuleList()
        for cb in _codebooks(k, size, dim, inited=False):
            layer = nn.Module()
            layer.codebook = cb
            self.quantizer.layers.append(layer)


def test_codec_training_model_losses_dropout_and_passthrough():
    torch.manual_seed(0)
    ae = _ToyAutoencoder()
    model = CodecTrainingModel(ae, 16000, quantizer_dropout=True, passthrough_prob=0.0, mel_fft_sizes=(256, 512),
                               n_mels=32)
    audio = torch.sin(torch.linspace(0, 400, 2048))[None, None].repeat(4, 1, 1) * 0.5
    out = model({"audio": audio})
    assert {"loss", "l1", "mel", "commit", "n_q"} <= set(out)
    assert all(torch.isfinite(v).all() for v in out.values())
    out["loss"].backward()
    assert ae.encoder.weight.grad is not None and ae.encoder.weight.grad.abs().sum() > 0  # straight-through
    assert all(layer.codebook.inited.item() == 1.0 for layer in ae.quantizer.layers)
    n_qs = {int(model({"audio": audio})["n_q"]) for _ in range(30)}
    assert n_qs == {1, 2, 3}  # quantizer dropout draws the number of codebooks
    model.eval()
    assert {int(model({"audio": audio})["n_q"]) for _ in range(3)} == {3}

    # pass-through: the decoder gets the continuous latent itself
    seen = []
    hook = ae.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    model.train()
    model.passthrough_prob = 1.0
    model({"audio": audio})
    assert torch.allclose(seen[-1], ae.encoder(audio).detach(), atol=1e-6)
    model.passthrough_prob = 0.0
    model.quantizer_dropout = False
    model({"audio": audio})
    assert not torch.allclose(seen[-1], ae.encoder(audio).detach(), atol=1e-3)
    hook.remove()


def test_codec_training_model_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    ae = _ToyAutoencoder(dim=16, hop=8, size=64)
    model = CodecTrainingModel(ae, 16000, quantizer_dropout=False, passthrough_prob=0.5, mel_fft_sizes=(256,),
                               n_mels=32, ema_decay=0.9, l1_weight=10.0)
    t = torch.arange(2048) / 16000
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 330.0, 440.0, 550.0)])[:, None]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    history = []
    for _ in range(110):
        out = model({"audio": audio})
        history.append({k: float(v) for k, v in out.items()})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["l1"] < 0.3 * history[0]["l1"]


def test_codec_training_model_adds_the_adversarial_terms_and_holds_the_discriminator():
    torch.manual_seed(0)
    audio = torch.sin(torch.linspace(0, 400, 2048))[None, None].repeat(2, 1, 1) * 0.5
    kw = dict(quantizer_dropout=False, passthrough_prob=0.0, mel_fft_sizes=(256,), n_mels=32)
    plain = CodecTrainingModel(_ToyAutoencoder(), 16000, **kw)
    assert plain.discriminator is None and not any(k.startswith("adversarial") for k in plain.state_dict())
    assert {"gen_adv", "feat", "disc"}.isdisjoint(plain({"audio": audio}))

    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(256, 64), filters=4)
    model = CodecTrainingModel(_ToyAutoencoder(), 16000, adversarial=AdversarialLoss(disc), adv_weight=2.0,
                               feat_weight=0.5, **kw)
    assert model.discriminator is disc
    state = model.state_dict()
    disc_keys = [k for k in state if k.startswith("adversarial.discriminator.")]
    assert len(disc_keys) == len(disc.state_dict()) > 0
    out = model({"audio": audio})
    assert all(out[k].dim() == 0 and not out[k].requires_grad for k in ("gen_adv", "feat", "disc"))
    # loss = reconstruction terms + 2 * gen_adv + 0.5 * feat + disc
    recon = out["l1"] + out["mel"] + out["commit"]
    expected = recon + 2.0 * out["gen_adv"] + 0.5 * out["feat"] + out["disc"]
    assert torch.allclose(out["loss"].detach(), expected, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in disc.parameters())  # one backward reaches both players
    assert model.autoencoder.decoder.weight.grad.abs().sum() > 0
