"""The decoding step's three execution modes, the static KV cache, the fused tables and the sampler."""

import pytest
import torch
import torch.nn.functional as F

from arfm.models.build import build_model
from arfm.models.sampling import Sampler, inverse_cdf
from arfm.models.transformer import Transformer

K, CARD, T = 4, 32, 12
CONTROLS = {"chords": 193, "melody": 54}


def make_ar(**kw):
    torch.manual_seed(0)
    return build_model("ar", preset="tiny", text_dim=16, n_codebooks=K, codebook_size=CARD, **kw).eval()


def test_compiled_and_eager_decoding_give_the_same_tokens(text):
    """torch.compile'd steps on the static cache decode the very tokens of the eager steps: greedy, and sampled
    with per-row seeds, with CFG and controls (one compiled graph serves every step of both decodes)."""
    model = make_ar(controls=CONTROLS)
    ctrl = {"chords": torch.randint(0, 193, (2, T), generator=torch.Generator().manual_seed(1))}

    def decode():
        gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
        greedy = model.generate(*text, T, ctrl, top_k=1, cfg=3.0)
        sampled, ent = model.generate(*text, T, ctrl, top_k=8, cfg=3.0, generator=gens, return_entropy=True)
        return greedy, sampled, ent

    eager = decode()
    model.set_decoding("compile")
    compiled = decode()
    assert "_compiled_logits" in model.__dict__  # the compiled step did run
    assert torch.equal(compiled[0], eager[0]) and torch.equal(compiled[1], eager[1])
    torch.testing.assert_close(compiled[2], eager[2], rtol=1e-4, atol=1e-5)
    assert not torch.equal(eager[0], eager[1])  # greedy and sampled decodes differ: the check has teeth


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_decoding_gives_the_eager_tokens(text):
    model = make_ar().cuda()
    feats, mask = (t.cuda() for t in text)
    eager = model.generate(feats, mask, T, top_k=1, cfg=3.0)
    model.set_decoding("cuda_graphs")
    assert torch.equal(model.generate(feats, mask, T, top_k=1, cfg=3.0), eager)


def test_cuda_graphs_are_refused_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        make_ar().set_decoding("cuda_graphs")
    with pytest.raises(ValueError, match="decoding mode"):
        make_ar().set_decoding("fast")


def test_static_cache_steps_equal_the_full_causal_forward():
    """The fixed-shape cache (a tensor position, a mask over unwritten steps) computes what full attention does."""
    torch.manual_seed(0)
    net = Transformer(dim=32, heads=4, layers=2, ffn=64).eval()
    x, mem = torch.randn(2, 10, 32), torch.randn(2, 3, 32)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    full = net(x, mem, mask)
    cache, outs, i = net.new_cache(10, static=True), [], 0
    for n in (3, 1, 1, 4, 1):
        outs.append(net(x[:, i: i + n], mem, mask, cache))
        i += n
    assert cache.length == 10 and isinstance(cache.start, torch.Tensor)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


def test_fused_tables_compute_the_same_logits(text):
    model = make_ar()
    inputs = torch.randint(0, CARD + 1, (2, K, 7))
    memory, mmask = model.text(*text)
    plain = model._logits(inputs, None, memory, mmask)
    fused = model._logits(inputs, None, memory, mmask, fused=model.fused_tables())
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_sampler_draws_from_the_filtered_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0]).log_softmax(-1)
    rows = 20000
    sampler = Sampler(rows, 1, 1, top_k=3, generator=torch.Generator().manual_seed(0))
    draws = sampler(logits.expand(rows, 1, 6), 0)[:, 0]
    assert set(draws.unique().tolist()) == {0, 1, 2}  # only the top 3
    want = torch.softmax(logits[:3], -1)
    got = torch.bincount(draws, minlength=6)[:3].float() / rows
    torch.testing.assert_close(got, want, atol=0.015, rtol=0)
    nucleus = Sampler(rows, 1, 1, top_p=0.5, generator=torch.Generator().manual_seed(1))(logits.expand(rows, 1, 6), 0)
    assert set(nucleus.unique().tolist()) == {0}  # token 0 alone holds more than half of the mass
    assert torch.equal(Sampler(1, 1, 1, top_k=1)(logits.view(1, 1, 6), 0), torch.tensor([[0]]))


def test_inverse_cdf_never_draws_a_zero_probability_token():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).expand(5, 5)
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.999999])
    assert inverse_cdf(probs, u).tolist() == [1, 1, 3, 3, 3]


def test_each_rows_draws_come_from_its_own_generator():
    def draws(*seeds):
        s = Sampler(len(seeds), 5, 2, top_k=0, generator=[torch.Generator().manual_seed(x) for x in seeds])
        return torch.stack([s(torch.zeros(len(seeds), 2, 16), step) for step in range(5)], dim=1)

    a, b = draws(1, 2), draws(1, 3)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert torch.equal(draws(1)[0], a[0])


def test_decoding_matches_a_plain_reference_loop(text):
    """Greedy decoding equals a loop that recomputes every step from scratch with the unfused model."""
    model = make_ar()
    got = model.generate(*text, T, top_k=1, cfg=1.0)
    from arfm.models.patterns import deinterleave, interleave

    seq = interleave(torch.full((2, K, T), model.empty), model.empty)
    frame_of = torch.arange(seq.shape[-1])[None] - torch.arange(K)[:, None]
    for s in range(seq.shape[-1]):
        logits = model.step_logits(seq, *text)[:, :, s]
        tok = logits.argmax(-1)
        valid = (frame_of[:, s] >= 0) & (frame_of[:, s] < T)
        seq[:, :, s] = torch.where(valid[None], tok, seq[:, :, s])
    assert torch.equal(got, deinterleave(seq, T))
    assert F.one_hot(got, CARD).sum() == 2 * K * T
