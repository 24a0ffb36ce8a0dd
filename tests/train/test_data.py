"""The training data path without Ray: epochs in memory, exact resume, per-worker shares, codec crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arfm.config import resolve
from arfm.train import data as td


def _cols(n: int = 23) -> dict[str, np.ndarray]:
    ids = np.array([f"row{i:03d}" for i in range(n)], dtype=object)
    rng = np.random.default_rng(0)
    order = rng.permutation(n)  # blocks arrive in any order
    return {"id": ids[order], "x": np.arange(n, dtype=np.float32)[order, None].repeat(3, 1)}


class _Task:
    def collate(self, cfg, batch):
        return {"x": torch.as_tensor(np.stack(list(batch["x"])))}


def _ids(batch) -> list[int]:
    return batch["x"][:, 0].long().tolist()


def test_read_rows_sorts_by_id_and_shares_are_equal_and_disjoint():
    cols = _cols()
    blocks = [{k: v[:10] for k, v in cols.items()}, {k: v[10:] for k, v in cols.items()}]
    rows = td.read_rows(blocks)
    assert list(rows["id"]) == sorted(cols["id"])
    assert rows["x"][:, 0].tolist() == list(range(23))
    parts = [td.share(rows, r, 3) for r in range(3)]
    assert [td.n_rows(p) for p in parts] == [7, 7, 7]  # 23 rows -> 21 in equal shares
    seen = np.concatenate([p["x"][:, 0] for p in parts])
    assert len(set(seen.tolist())) == 21


def test_memory_epochs_cover_every_row_once_per_epoch_with_a_new_order_each_epoch():
    cfg = resolve("tiny")
    epochs = td.memory_epochs(_Task(), cfg, td.read_rows([_cols(24)]), micro=4, rank=0)
    assert epochs.n_batches == 6
    feed = td.MemoryFeed(epochs)
    e0 = [i for _ in range(6) for i in _ids(next(feed))]
    e1 = [i for _ in range(6) for i in _ids(next(feed))]
    assert sorted(e0) == sorted(e1) == list(range(24))
    assert e0 != e1 and feed.position == (2, 0)
    # another rank draws another order from the same rows
    other = td.MemoryFeed(td.memory_epochs(_Task(), cfg, td.read_rows([_cols(24)]), micro=4, rank=1))
    assert [i for _ in range(6) for i in _ids(next(other))] != e0


@pytest.mark.parametrize("stop", [1, 5, 6, 7, 13])
def test_a_feed_restarted_from_a_saved_position_continues_exactly(stop):
    cfg = resolve("tiny")
    rows = td.read_rows([_cols(26)])  # 6 full batches of 4 an epoch, 2 rows dropped
    straight = td.MemoryFeed(td.memory_epochs(_Task(), cfg, rows, 4, 0))
    expected = [_ids(next(straight)) for _ in range(20)]
    first = td.MemoryFeed(td.memory_epochs(_Task(), cfg, rows, 4, 0))
    got = [_ids(next(first)) for _ in range(stop)]
    saved = first.position  # what a checkpoint taken now stores
    del first  # the worker dies
    again = td.MemoryFeed(td.memory_epochs(_Task(), cfg, td.read_rows([_cols(26)]), 4, 0), *saved)
    got += [_ids(next(again)) for _ in range(20 - stop)]
    assert got == expected


def test_an_epoch_without_a_full_batch_is_a_clear_error():
    cfg = resolve("tiny")
    with pytest.raises(RuntimeError, match="smaller train.batch_size"):
        td.MemoryFeed(td.memory_epochs(_Task(), cfg, td.read_rows([_cols(3)]), 4, 0))


def test_plan_follows_the_size_estimate_and_the_setting():
    class Sized:
        def __init__(self, n):
            self.n = n

        def train_bytes(self, cfg):
            return self.n

    cfg = resolve("tiny", overrides=["train.memory_gb=1"])
    assert td.plan(cfg, Sized(2**29)).mode == "memory"
    assert td.plan(cfg, Sized(2**31)).mode == "stream"
    assert td.plan(cfg, object()).mode == "stream"  # no estimate: never load blindly
    assert td.plan(resolve("tiny", overrides=["train.data_mode=stream"]), Sized(1)).mode == "stream"


def test_codec_epochs_draw_fresh_crops_each_epoch_and_repeat_them_on_resume():
    from arfm.train.tasks.codec import CropEpochs

    clips = [np.sin(np.arange(4000) * (0.01 + 0.001 * i)).astype(np.float32) for i in range(5)]
    ep = CropEpochs(clips, n=500, crops=4, micro=4, seed=3, rank=0)
    assert ep.n_batches == 5
    a, b = ep.batch(0, 2)["audio"], ep.batch(1, 2)["audio"]
    assert a.shape == (4, 1, 500) and not torch.equal(a, b)  # new offsets every epoch
    again = CropEpochs(clips, n=500, crops=4, micro=4, seed=3, rank=0)
    assert torch.equal(again.batch(1, 2)["audio"], b) and torch.equal(again.batch(0, 2)["audio"], a)


def test_validation_loss_is_the_same_at_every_call_even_with_random_draws():
    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            noise = torch.rand(batch["x"].shape[0])  # like FM's t and noise
            return {"loss": ((batch["x"][:, 0] * self.w - noise) ** 2).mean()}

    val = [{"x": torch.arange(8.0).reshape(4, 2)}, {"x": torch.arange(4.0).reshape(2, 2)}]
    model = Noisy().train()
    a = td.validation_loss(model, val, lambda b: b, seed=5)
    torch.rand(3)  # the training stream moves on ...
    b = td.validation_loss(model, val, lambda b: b, seed=5)
    assert a == b and a[1] == 6 and model.training  # ... but validation repeats, and training mode is restored
    state = torch.get_rng_state()
    td.validation_loss(model, val, lambda b: b, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # and it does not disturb the training stream
