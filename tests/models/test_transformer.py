import torch

from arfm.models.transformer import Transformer


def make(**kw):
    torch.manual_seed(0)
    return Transformer(dim=32, heads=4, layers=kw.pop("layers", 2), ffn=64, **kw).eval()


def test_chunked_kv_cache_equals_full_causal_forward():
    net = make()
    x, mem = torch.randn(2, 10, 32), torch.randn(2, 3, 32)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    full = net(x, mem, mask)
    cache, outs, i = net.new_cache(), [], 0
    for n in (3, 1, 4, 2):  # prefill, single steps and multi-step chunks after a prefix
        outs.append(net(x[:, i : i + n], mem, mask, cache))
        i += n
    assert cache.length == 10
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)
    assert cache.layers[0].cross is not None  # cross-attention K/V computed once


def test_key_padding_mask_hides_padded_text():
    net = make()
    x, mem = torch.randn(1, 4, 32), torch.randn(1, 3, 32)
    mask = torch.tensor([[True, True, False]])
    mem2 = mem.clone()
    mem2[:, 2] += 10.0
    assert torch.allclose(net(x, mem, mask), net(x, mem2, mask), atol=1e-6)
    assert not torch.allclose(net(x, mem, None), net(x, mem2, None), atol=1e-4)


def test_unet_skips_join_input_of_block_i_with_output_of_block_2n_minus_i():
    net = make(layers=4, causal=False, unet_skips=True)
    assert len(net.skips) == 2
    with torch.no_grad():  # make each merge return the skip alone: Linear(Concat(x, skip)) = skip
        for proj in net.skips:
            proj.weight.zero_()
            proj.weight[:, 32:] = torch.eye(32)
            proj.bias.zero_()
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone())) for b in net.blocks]
    net(torch.randn(2, 5, 32))
    for h in hooks:
        h.remove()
    # blocks 0-indexed: input of block 3 is the input of block 0, input of block 2 that of block 1
    assert torch.equal(seen[3], seen[0]) and torch.equal(seen[2], seen[1])
    assert len(make(layers=3, unet_skips=True).skips) == 1
