"""Loader without Ray: contract batch shapes from real shards (written in-process), shuffling, columns.

The Ray Dataset view (``shard_dataset``) is tested in test_preprocess.py, which has Ray running."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from arfm.config import resolve
from arfm.data.loader import ShardsError, collate, iter_batches, read_meta
from arfm.data.preprocess import preprocess
from arfm.latents import Codec

SR = 32000


def make_dataset(d: Path, n: int = 5, seconds: float = 1.0) -> None:
    (d / "audio").mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for i in range(n):
        x = (0.3 * np.sin(2 * np.pi * (220 + 30 * i) * t)).astype(np.float32)
        sf.write(d / "audio" / f"c{i}.wav", x, SR, subtype="PCM_16")
        labels = {"chords": [["Am", 0.0, seconds]], "melody": [[57 + i, 0.0, seconds / 2]]}
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": f"tone {i}", "seconds": seconds,
                     "split": "valid" if i == 4 else "train", "sample_rate": SR, "labels": labels})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards written without Ray (executor="local"), from a codec that has no normalization yet."""
    root = tmp_path_factory.mktemp("loader")
    make_dataset(root / "ds")
    cfg = resolve("tiny", overrides=["text.encoder=tiny-t5", "text.max_tokens=8", "data.segment_seconds=1.0"])
    codec = Codec.from_config(cfg.codec, SR)
    summary = preprocess(cfg, root / "ds", codec, root / "shards", clips_per_shard=2, executor="local",
                         progress=False)
    assert summary["written"] == 3
    (root / "shards" / "train" / ".part-00009.parquet.tmp-1-abc").write_bytes(b"junk")  # must be ignored
    return root / "shards"


def test_preprocess_computes_and_stores_normalization(shards):
    meta = read_meta(shards)
    codec = Codec.load(meta["codec_path"])
    assert codec.has_normalization and codec.identity == meta["codec"]
    assert codec.norm_info["n_segments"] == 4  # every train segment (E.2 uses min(norm_segments, available))
    assert meta["latent_mean"] == codec.mean and meta["latent_mean_std"] == codec.mean_std


def test_iter_batches_contract_shapes(shards):
    meta = read_meta(shards)
    k, t, d = meta["n_codebooks"], meta["n_frames"], meta["latent_dim"]
    batches = list(iter_batches(shards, "train", batch_size=3, shuffle=False, with_info=True))
    assert [b["tokens"].shape[0] for b in batches] == [3, 1]
    b = batches[0]
    assert b["tokens"].shape == (3, k, t) and b["tokens"].dtype == torch.int64
    assert b["latent"].shape == (3, t, d) and b["latent"].dtype == torch.float32
    assert b["text"].shape == (3, 8, 64) and b["text_mask"].shape == (3, 8) and b["text_mask"].dtype == torch.bool
    for c in ("chords", "melody", "drums"):
        assert b[c].shape == (3, t) and b[c].dtype == torch.int64
    assert b["id"] == ["c0", "c1", "c2"] and b["caption"][0] == "tone 0"
    assert torch.all(b["chords"] == 9 * 16 + 1)  # Am everywhere
    assert b["melody"][1, 0].item() == 58 - 43 and b["melody"][1, -1].item() == 53
    assert int(b["tokens"].max()) < meta["codebook_size"] and int(b["drums"].max()) < meta["codebook_size"]


def test_iter_batches_shuffle_columns_drop_last(shards):
    order = lambda **kw: [i for b in iter_batches(shards, "train", 1, with_info=True, **kw) for i in b["id"]]  # noqa: E731
    assert order(shuffle=False) == ["c0", "c1", "c2", "c3"]
    assert order(seed=1) == order(seed=1) and sorted(order(seed=1)) == ["c0", "c1", "c2", "c3"]
    assert len({tuple(order(seed=s)) for s in range(6)}) > 1
    only = next(iter_batches(shards, "train", 4, columns=["tokens"]))
    assert set(only) == {"tokens"}
    assert [b["latent"].shape[0] for b in iter_batches(shards, "train", 3, drop_last=True, columns=["latent"])] == [3]


def test_collate_accepts_object_and_2d_columns(shards):
    meta = read_meta(shards)
    import pyarrow.parquet as pq

    table = pq.read_table(shards / "valid" / "part-00000.parquet")
    as_objects = {c: np.array([np.asarray(v) for v in table.column(c).to_pylist()] + [None], dtype=object)[:-1]
                  for c in ("tokens", "drums")}
    as_2d = {"latent": np.stack([np.asarray(v, np.float32) for v in table.column("latent").to_pylist()])}
    out = collate({**as_objects, **as_2d}, meta)
    assert out["tokens"].shape == (1, meta["n_codebooks"], meta["n_frames"]) and out["drums"].shape == (1, meta["n_frames"])
    assert out["latent"].shape == (1, meta["n_frames"], meta["latent_dim"])
    with pytest.raises(ValueError, match="meta expects"):
        collate({"drums": np.zeros((1, 3))}, meta)


def test_missing_shards_are_clear_errors(tmp_path):
    with pytest.raises(ShardsError, match="arfm data preprocess"):
        read_meta(tmp_path)
