"""``preprocess``: Parquet shards per the contract, normalization, idempotent reruns and crash recovery (Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from arfm.config import resolve
from arfm.controls import controls_from_labels
from arfm.data.preprocess import META_KEY, PreprocessError, preprocess
from arfm.latents import Codec

SR = 32000
OVERRIDES = ["text.encoder=tiny-t5", "text.max_tokens=16", "data.segment_seconds=1.0"]


def make_dataset(d: Path, n: int = 6, seconds: float = 2.0, unlabeled: int = 1) -> list[dict]:
    """n clips of a triad + a melody note; clip004 is valid; the first ``unlabeled`` clips have labels=null."""
    (d / "audio").mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        root, mel = 48 + i, 67 + i
        x = sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in (root, root + 4, root + 7)) / 4
        x = x + 0.3 * np.sin(2 * np.pi * 440 * 2 ** ((mel - 69) / 12) * t) * (t < 0.7 * seconds)
        x = (0.5 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        cid = f"clip{i:03d}"
        sf.write(d / "audio" / f"{cid}.wav", x, SR, subtype="PCM_16")
        labels = None if i < unlabeled else {
            "key": "C", "mode": "major", "tempo": 120.0, "time_signature": [4, 4], "genre": "pop",
            "instruments": ["piano"], "chords": [["C", 0.0, 0.5 * seconds], ["G7", 0.5 * seconds, seconds]],
            "melody": [[mel, 0.0, 0.7 * seconds]], "beats": [0.0, 0.5], "downbeats": [0.0]}
        rows.append({"id": cid, "path": f"audio/{cid}.wav", "caption": f"calm piano piece {i % 3}",
                     "split": "valid" if i == 4 else "train", "seconds": seconds, "sample_rate": SR, "labels": labels})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg():
    return resolve("tiny", overrides=OVERRIDES)


@pytest.fixture(scope="module")
def run(ray_local, cfg, tmp_path_factory):
    """A run killed part-way (a stale temporary file + a crash), then the Ray rerun (2 workers) completing it."""
    from arfm.data.manifest import load_audio
    from arfm.latents import compute_normalization

    root = tmp_path_factory.mktemp("pp")
    rows = make_dataset(root / "ds")
    codec = Codec.from_config(cfg.codec, SR)
    train = [load_audio(root / "ds", r)[k * SR:(k + 1) * SR] for r in rows if r["split"] == "train" for k in (0, 1)]
    compute_normalization(codec, train, len(train))  # what preprocess does when the codec has none (test_loader)
    out = root / "shards"
    (out / "train").mkdir(parents=True)
    (out / "train" / ".part-00001.parquet.tmp-123-deadbeef").write_bytes(b"partial")
    # the first run dies in its second shard (in-process executor: same shard code, no second Ray start-up)
    with pytest.raises(RuntimeError, match="injected failure"):
        preprocess(cfg, root / "ds", codec, out, clips_per_shard=2, progress=False, executor="local",
                   fail_shards=(("train", 1),))
    crashed = sorted(p.relative_to(out).as_posix() for p in out.glob("*/part-*.parquet"))
    summary = preprocess(cfg, root / "ds", codec, out, workers=2, clips_per_shard=2, progress=False)
    return {"root": root, "rows": rows, "summary": summary, "out": out, "crashed": crashed}


def _all_rows(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*/part-*.parquet"))])


def test_shards_follow_the_contract(run, cfg):
    out, summary = run["out"], run["summary"]
    # train: 5 clips -> 3 shards, valid: 1. The crashed run finished only the first shard.
    assert run["crashed"] == ["train/part-00000.parquet"]
    assert summary["written"] == 3 and summary["skipped"] == 1
    assert not list(out.glob("*/.part-*"))  # the stale temporary file is gone
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/part-*.parquet")) == [
        "train/part-00000.parquet", "train/part-00001.parquet", "train/part-00002.parquet",
        "valid/part-00000.parquet"]
    meta = json.loads((out / "meta.json").read_text())
    codec = Codec.load(meta["codec_path"])
    assert codec.has_normalization and meta["codec"] == codec.identity
    k, t, d = codec.n_codebooks, codec.n_frames(1.0), codec.latent_dim
    assert (meta["schema_version"], meta["n_frames"], meta["n_codebooks"], meta["latent_dim"]) == (2, t, k, d)
    assert meta["text_encoder"].startswith("tiny-t5") and (meta["text_dim"], meta["text_len"]) == (64, 16)
    assert meta["splits"] == {"train": 10, "valid": 2} and meta["controls"] == ["chords", "melody", "drums"]
    schema = pq.read_schema(out / "valid" / "part-00000.parquet")
    file_meta = json.loads(schema.metadata[META_KEY])
    assert file_meta["schema_version"] == 2 and file_meta["codec"] == meta["codec"]
    assert schema.field("tokens").type == pa.list_(pa.int16()) and schema.field("latent").type == pa.list_(pa.float32())
    assert schema.field("text_mask").type == pa.list_(pa.bool_()) and schema.field("drums").type == pa.list_(pa.int16())

    table = _all_rows(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12 and "clip003#1" in ids  # 2 s clips -> two 1 s segments each
    for col, n in [("tokens", k * t), ("latent", t * d), ("chords", t), ("melody", t), ("drums", t),
                   ("text", 16 * 64), ("text_mask", 16)]:
        assert set(pc_len(table, col)) == {n}, col


def pc_len(table: pa.Table, col: str) -> list[int]:
    import pyarrow.compute as pc

    return pc.list_value_length(table.column(col)).to_pylist()


def test_rows_hold_the_codec_outputs_and_label_controls(run):
    out = run["out"]
    meta = json.loads((out / "meta.json").read_text())
    codec = Codec.load(meta["codec_path"])
    t, d, k = meta["n_frames"], meta["latent_dim"], meta["n_codebooks"]
    table = _all_rows(out).to_pylist()
    row = next(r for r in table if r["id"] == "clip004#1")  # in the shard the crashed run lost
    audio, _ = sf.read(run["root"] / "ds" / "audio" / "clip004.wav", dtype="float32")
    z = codec.encode_latent(torch.from_numpy(audio[SR: 2 * SR])[None, None])
    assert np.allclose(np.array(row["latent"]).reshape(t, d), codec.normalize(z)[0].numpy(), atol=1e-4)
    assert np.array_equal(np.array(row["tokens"]).reshape(k, t), codec.quantize(z)[0].numpy())
    labels = run["rows"][4]["labels"]
    want = controls_from_labels(labels, codec.frame_rate, t, offset=1.0)
    assert row["chords"] == want["chords"].tolist() and row["melody"] == want["melody"].tolist()
    assert row["caption"] == "calm piano piece 1" and sum(row["text_mask"]) > 0
    # appendix E.2: over the (whole) train set the normalized latent has mean ~0 and mean-std ~1
    lat = np.stack([np.array(r["latent"]).reshape(t, d) for r in table if not r["id"].startswith("clip004")])
    assert abs(lat.mean()) < 1e-3 and abs(lat.std(axis=1, ddof=1).mean() - 1) < 1e-3
    assert "chords:" in ",".join(meta["control_methods"])  # clip000 has no labels: estimated from audio


def test_second_run_does_no_work(run, cfg):
    out = run["out"]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/part-*.parquet")}
    meta = json.loads((out / "meta.json").read_text())
    summary = preprocess(cfg, run["root"] / "ds", meta["codec_path"], out, workers=2, clips_per_shard=2,
                         progress=False)
    assert summary["written"] == 0 and summary["skipped"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/part-*.parquet")} == before
    with pytest.raises(PreprocessError, match="different run"):
        preprocess(cfg, run["root"] / "ds", meta["codec_path"], out, clips_per_shard=3, progress=False)


def test_shard_dataset_reads_the_shards_with_ray(run):
    from arfm.data.loader import collate, read_meta, shard_dataset

    meta = read_meta(run["out"])
    (run["out"] / "train" / ".part-00007.parquet.tmp-1-abc").write_bytes(b"junk")  # in-flight files are skipped
    batch = shard_dataset(run["out"], "train").take_batch(20, batch_format="numpy")
    assert len(batch["id"]) == 10 and len(set(batch["id"].tolist())) == 10
    out = collate(batch, meta)
    assert out["tokens"].shape == (10, meta["n_codebooks"], meta["n_frames"])
    assert out["latent"].shape == (10, meta["n_frames"], meta["latent_dim"])
    assert out["text"].shape == (10, meta["text_len"], meta["text_dim"]) and out["text_mask"].dtype == torch.bool
