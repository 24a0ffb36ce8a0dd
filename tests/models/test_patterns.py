import torch

from arfm.models.fim import fim_arrange, fim_restore, prompt_frames
from arfm.models.patterns import deinterleave, interleave, n_steps, valid_mask
from arfm.models.spans import random_spans, span_length, span_mask

EMPTY = 99


def test_delay_interleave_roundtrip_and_layout():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (3, 4, 10), generator=g)
    seq = interleave(codes, EMPTY, "delay")
    assert seq.shape == (3, 4, 10 + 4 - 1)
    assert torch.equal(deinterleave(seq, 10, "delay"), codes)
    # P(i, j) = (i, j + i - 1): codebook k of frame j sits at step j + k, empty elsewhere
    for k in range(4):
        assert torch.equal(seq[:, k, k : k + 10], codes[:, k])
        assert (seq[:, k, :k] == EMPTY).all() and (seq[:, k, k + 10 :] == EMPTY).all()
    assert int(valid_mask(10, 4).sum()) == 40
    assert int((seq != EMPTY).sum()) == 3 * 40


def test_parallel_pattern_is_identity():
    codes = torch.randint(0, 64, (2, 4, 7))
    assert n_steps(7, 4, "parallel") == 7
    assert torch.equal(interleave(codes, EMPTY, "parallel"), codes)
    assert torch.equal(deinterleave(codes, 7, "parallel"), codes)


def test_deinterleave_works_on_logits():
    codes = torch.randint(0, 8, (2, 3, 5))
    onehot = torch.nn.functional.one_hot(interleave(codes, 8, "delay"), 9)  # [B, K, S, V]
    assert torch.equal(deinterleave(onehot, 5).argmax(-1), codes)


def test_fim_layout_and_roundtrip():
    x = torch.arange(10)[None].repeat(2, 1)
    start, end = torch.tensor([2, 5]), torch.tensor([5, 8])
    arranged = fim_arrange(x, start, end, (100, 101, 102))
    # [<a>, A, <c>, C, <b>, B]
    assert arranged[0].tolist() == [100, 0, 1, 101, 5, 6, 7, 8, 9, 102, 2, 3, 4]
    assert arranged[1].tolist() == [100, 0, 1, 2, 3, 4, 101, 8, 9, 102, 5, 6, 7]
    assert torch.equal(fim_restore(arranged, start, end), x)
    assert prompt_frames(10, 3) == 10  # <a> A <c> C <b>
    codes = torch.randint(0, 50, (2, 4, 10))
    assert torch.equal(fim_restore(fim_arrange(codes, start, end, (60, 61, 62)), start, end), codes)


def test_random_spans_respect_margins():
    g = torch.Generator().manual_seed(0)
    s, e = random_spans(500, 500, 0.5, 0.1, generator=g)
    assert ((e - s) == 250).all()
    assert int(s.min()) >= 50 and int(e.max()) <= 450
    assert span_length(500, 0.5) == 250
    m = span_mask(torch.tensor([1]), torch.tensor([3]), 5)
    assert m[0].tolist() == [False, True, True, False, False]
