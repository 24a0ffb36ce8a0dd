"""Per-step AR entropy (appendix I, figure 9)."""

import math

import numpy as np
import pytest
import torch

from arfm.evaluate.entropy import entropy_curve, entropy_from_logits, entropy_metric


def test_entropy_of_known_distributions():
    k = 2048
    assert entropy_from_logits(np.zeros(k)) == pytest.approx(math.log(k))
    peaked = np.full(k, -1e4)
    peaked[3] = 0.0
    assert entropy_from_logits(peaked) == pytest.approx(0.0, abs=1e-6)
    two = np.log(np.array([0.5, 0.5, 1e-30]))
    assert entropy_from_logits(two) == pytest.approx(math.log(2))
    logits = torch.randn(3, 7, 16)
    assert np.allclose(entropy_from_logits(logits), entropy_from_logits(logits.numpy()), atol=1e-5)


def test_curve_over_prompts():
    per_prompt = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0]]
    c = entropy_curve(per_prompt)
    assert c.mean.tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert c.n.tolist() == [3, 3, 2]
    assert c.lo[0] < 2.0 < c.hi[0] and c.lo[1] == c.hi[1] == 2.0
    d = c.to_dict()
    assert set(d) == {"mean", "lo", "hi", "n"}
    m = entropy_metric(per_prompt)
    assert m.value == pytest.approx(2.0) and m.n == 3
    assert entropy_metric(per_prompt, window=(0, 1)).per_sample == [1.0, 3.0, 2.0]
