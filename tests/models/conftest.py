"""Shared fixtures for the model tests: tiny shapes, one CPU thread (tiny ops run fastest that way)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def text():
    g = torch.Generator().manual_seed(123)
    feats = torch.randn(2, 5, 16, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return feats, mask
