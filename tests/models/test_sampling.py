"""Top-k or top-p truncation of AR logits, never both."""

import pytest
import torch

from arfm.models.sampling import Sampler, filter_logits


def test_top_k_keeps_k_and_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]


def test_top_k_with_top_p_is_refused():
    logits = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="top-k or top-p, not both"):
        filter_logits(logits, top_k=4, top_p=0.8)
    with pytest.raises(ValueError, match="not both"):
        Sampler(2, 1, 1, temperature=1.2, top_k=4, top_p=0.8)
