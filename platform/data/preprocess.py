"""``arfm data preprocess``: encode every segment once into Parquet shards for both paradigms (Ray Data).

Plan (driver): the manifest rows are sorted by ``(split, id)`` and cut into shards of ``clips_per_shard`` clips;
shard ``i`` of a split is always ``SHARDS/<split>/part-<i:05d>.parquet`` and always holds the same clips, so the
shard index is a deterministic key. Each clip gives ``floor(seconds / data.segment_seconds)`` segments (at least
one; a short clip is zero-padded); segment ``k`` of a multi-segment clip gets the id ``<clip id>#<k>``.

Work (Ray Data): ``ray.data.from_items`` over the pending shards, ``map_batches`` into a pool of
:class:`ShardEncoder` actors (one codec + one text encoder loaded once per actor). An actor reads the audio of
its shard, runs the codec encoder in batches (pre-quantizer latent -> normalized latent; RVQ tokens by
quantizing that latent; drums by quantizing the 5-frame blurred latent), the text encoder on the unique
captions, takes chords/melody from the labels (or estimates them from the audio for unlabelled clips, see
:mod:`arfm.controls`), and writes the shard to a hidden temporary file that is renamed into place. The driver
only plans, shows progress and finally writes ``meta.json``.

Idempotent and resumable: a finished shard is a complete file with a matching fingerprint in its Parquet
metadata; a rerun skips it. A crash or kill loses only the shards in flight (their temporary files are removed
on the next run); no shard is ever written twice or partially. A rerun with a different codec, text encoder,
segment length, shard size or manifest refuses to mix shards (use ``overwrite=True`` or another output).
Nothing depends on the driver's machine except ``dataset_dir``, ``out_dir`` and the codec directory, which must
be reachable from every node on a cluster (shared storage).

When the codec has no latent normalization (appendix E.2), it is computed first over up to
``codec.norm_segments`` random train segments in a parallel Ray Data pass and stored with the codec.

A second representation: given a VAE (``vae=``, a folder written by ``arfm codec train --kind vae`` at the codec's
frame rate), every shard also holds ``vae_latent`` (the normalized posterior mean, ``[T, 64]``) beside the EnCodec
columns, and the metadata names it (``vae``, ``vae_path``, ``vae_latent_dim``, ``representations``), so FM trains
on either latent from the same shards (``model.representation``); the controls are shared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from arfm.data.normalization import _normalization, _resolve_codec, _resolve_vae, _store_normalization

SCHEMA_VERSION = 2  # 2: optional vae_latent column, "representations" in the metadata
META_FILE = "meta.json"
META_KEY = b"arfm.meta"
CONTROLS = ("chords", "melody", "drums")
DEFAULT_CLIPS_PER_SHARD = 32


class PreprocessError(RuntimeError):
    """The output folder or the inputs do not allow a run; the message says what to do."""


# --------------------------------------------------------------------------------------------- planning


def segment_plan(row: dict[str, Any], segment_seconds: float) -> list[tuple[str, float]]:
    """``[(segment id, start seconds)]`` of one manifest row."""
    n = max(1, int(math.floor(float(row["seconds"]) / segment_seconds + 1e-6)))
    if n == 1:
        return [(row["id"], 0.0)]
    return [(f"{row['id']}#{k}", k * segment_seconds) for k in range(n)]


def plan_shards(rows: list[dict[str, Any]], clips_per_shard: int) -> list[dict[str, Any]]:
    """Deterministic shards: rows sorted by (split, id), cut every ``clips_per_shard`` clips per split."""
    if clips_per_shard < 1:
        raise ValueError("clips_per_shard must be >= 1")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise PreprocessError(f"manifest has duplicate ids: {dup}")
    shards = []
    for split in sorted({r["split"] for r in rows}):
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
        for i in range(0, len(part), clips_per_shard):
            shards.append({"split": split, "shard": i // clips_per_shard, "rows": part[i:i + clips_per_shard]})
    return shards


def shard_file(out_dir: str | Path, split: str, shard: int) -> Path:
    return Path(out_dir) / split / f"part-{shard:05d}.parquet"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _manifest_digest(rows: list[dict[str, Any]]) -> str:
    keep = ("id", "path", "caption", "split", "seconds", "sample_rate", "labels")
    return _digest(sorted(([r.get(k) for k in keep] for r in rows), key=lambda x: (x[3], x[0])))


# --------------------------------------------------------------------------------------------- worker side


def _segment_audio(audio: np.ndarray, start_s: float, seconds: float, sr: int) -> np.ndarray:
    s0, n = int(round(start_s * sr)), int(round(seconds * sr))
    seg = audio[s0:s0 + n]
    return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg


def _read_audio(dataset_dir: str, row: dict[str, Any], sample_rate: int) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(Path(dataset_dir) / row["path"]), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(sr), int(sample_rate))
        audio = resample_poly(audio, sample_rate // g, sr // g).astype(np.float32)
    return audio


def _list_array(values: np.ndarray, pa_type):
    """``[n, m]`` numpy -> Arrow ``list<pa_type>`` with n rows of m values (no Python loops)."""
    import pyarrow as pa

    n = values.shape[0]
    flat = values.reshape(n, -1)
    offsets = np.arange(n + 1, dtype=np.int32) * flat.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat.reshape(-1), type=pa_type))


def shard_schema(vae: bool = False):
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("clip_id", pa.string()), ("start_s", pa.float32()), ("caption", pa.string()),
        ("tokens", pa.list_(pa.int16())), ("latent", pa.list_(pa.float32())),
        ("chords", pa.list_(pa.int16())), ("melody", pa.list_(pa.int16())), ("drums", pa.list_(pa.int16())),
        ("text", pa.list_(pa.float32())), ("text_mask", pa.list_(pa.bool_())),
    ] + ([("vae_latent", pa.list_(pa.float32()))] if vae else []))


def write_table_atomic(table, path: Path) -> None:
    """Write ``table`` to ``.<name>.tmp-<random>`` next to ``path``, fsync, then rename into place."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, row_group_size=max(1, table.num_rows))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ShardEncoder:
    """Ray Data actor: loads the codec and the text encoder once, then encodes and writes whole shards."""

    def __init__(self, codec_path: str, text_cfg: dict, settings: dict):
        import torch

        from arfm.config import TextConfig
        from arfm.latents import Codec
        from arfm.text import build_text_encoder

        t0 = time.perf_counter()
        if settings.get("own_process"):
            torch.set_num_threads(max(1, int(settings.get("threads", 1))))
        self.codec = Codec.load(codec_path)
        self.vae = None
        if settings.get("vae_path"):
            from arfm.vae_latent import VAELatent

            self.vae = VAELatent.load(settings["vae_path"])
            if self.vae.identity != settings["meta"]["vae"]:
                raise PreprocessError(f"VAE at {settings['vae_path']} changed during the run ({self.vae.identity} "
                                      f"!= {settings['meta']['vae']})")
        self.text = build_text_encoder(TextConfig(**text_cfg))
        self.init_s = time.perf_counter() - t0  # model loading, reported with this actor's first shard
        self.s = settings
        if self.codec.identity != settings["codec_identity"]:
            raise PreprocessError(f"codec at {codec_path} changed during the run ({self.codec.identity} != "
                                  f"{settings['codec_identity']})")
        if (self.text.identity, self.text.dim) != (settings["meta"]["text_encoder"], settings["meta"]["text_dim"]):
            raise PreprocessError(f"text encoder {self.text.identity} (dim {self.text.dim}) differs from the planned "
                                  f"{settings['meta']['text_encoder']}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"split": [], "shard": [], "rows": [], "seconds": [], "methods": [],
                                "compute_s": [], "init_s": []}
        for task in batch["task"]:
            task = json.loads(str(task))
            t0 = time.perf_counter()
            info = self.encode_shard(task)
            info["compute_s"] = time.perf_counter() - t0
            info["init_s"], self.init_s = self.init_s, 0.0
            for k in out:
                out[k].append(info[k])
        return out

    def encode_shard(self, task: dict[str, Any]) -> dict[str, Any]:
        import pyarrow as pa
        import torch

        from arfm.controls import controls_from_audio, controls_from_labels, drums_from_latent

        s, codec = self.s, self.codec
        sr, seg_s, n_frames, bs = codec.sample_rate, s["segment_seconds"], s["n_frames"], int(s["encode_batch"])
        ids, clip_ids, starts, captions, chords, melody = [], [], [], [], [], []
        tokens, latents, drums, vae_latents, pending = [], [], [], [], []
        methods: set[str] = set()

        def flush() -> None:  # encode the pending segments: audio is held for at most one codec batch
            audio = torch.from_numpy(np.stack(pending))[:, None]
            z = codec.encode_latent(audio)[:, :n_frames]
            tokens.append(codec.quantize(z).cpu().numpy().astype(np.int16))
            drums.append(drums_from_latent(codec, z).cpu().numpy().astype(np.int16))
            latents.append(codec.normalize(z).cpu().numpy().astype(np.float32))
            if self.vae is not None:
                zv = self.vae.encode_latent(audio)[:, :n_frames]
                vae_latents.append(self.vae.normalize(zv).cpu().numpy().astype(np.float32))
            pending.clear()

        for row in task["rows"]:
            audio = _read_audio(s["dataset_dir"], row, sr)
            for seg_id, start in segment_plan(row, seg_s):
                seg = _segment_audio(audio, start, seg_s, sr)
                if row.get("labels") is not None:
                    c = controls_from_labels(row["labels"], codec.frame_rate, n_frames, offset=start)
                    methods.add("labels")
                else:
                    c = controls_from_audio(seg, sr, codec.frame_rate, n_frames)
                    methods.update(f"{k}:{v}" for k, v in c["methods"].items())
                ids.append(seg_id)
                clip_ids.append(row["id"])
                starts.append(start)
                captions.append(row["caption"])
                chords.append(c["chords"])
                melody.append(c["melody"])
                pending.append(seg)
                if len(pending) == bs:
                    flush()
        if pending:
            flush()
        uniq = sorted(set(captions))
        feats, masks = [], []
        for i in range(0, len(uniq), 32):
            f, m = self.text.encode(uniq[i:i + 32], pad_to_max=True)
            feats.append(f.cpu().numpy().astype(np.float32))
            masks.append(m.cpu().numpy())
        feats_np, masks_np = np.concatenate(feats), np.concatenate(masks)
        where = {c: j for j, c in enumerate(uniq)}
        pick = np.array([where[c] for c in captions])
        columns = [
            pa.array(ids, pa.string()), pa.array(clip_ids, pa.string()), pa.array(starts, pa.float32()),
            pa.array(captions, pa.string()),
            _list_array(np.concatenate(tokens), pa.int16()), _list_array(np.concatenate(latents), pa.float32()),
            _list_array(np.stack(chords).astype(np.int16), pa.int16()),
            _list_array(np.stack(melody).astype(np.int16), pa.int16()),
            _list_array(np.concatenate(drums), pa.int16()),
            _list_array(feats_np[pick], pa.float32()), _list_array(masks_np[pick], pa.bool_()),
        ]
        if self.vae is not None:
            columns.append(_list_array(np.concatenate(vae_latents), pa.float32()))
        file_meta = {**s["meta"], "split": task["split"], "shard": task["shard"], "rows": len(ids),
                     "fingerprint": s["fingerprint"], "control_methods": sorted(methods)}
        schema = shard_schema(self.vae is not None).with_metadata({META_KEY: json.dumps(file_meta).encode()})
        table = pa.Table.from_arrays(columns, schema=schema)
        if task.get("fail"):
            raise RuntimeError(f"injected failure in shard {task['split']}/{task['shard']}")
        write_table_atomic(table, Path(task["path"]))
        return {"split": task["split"], "shard": task["shard"], "rows": len(ids),
                "seconds": len(ids) * seg_s, "methods": json.dumps(sorted(methods))}


# --------------------------------------------------------------------------------------------- driver


def _own_progress():
    """Ray Data's progress output off while our own bar (shards, seconds of audio, speed) runs."""
    from arfm.raylogs import ray_data_quiet

    return ray_data_quiet()


def _map(cls, ctor: dict, items: list[dict], batch_size: int, workers: int, cpus: int, executor: str):
    """Run the actor class ``cls`` over ``items`` in batches; yield its output rows as they finish.

    ``executor="ray"``: Ray Data (``from_items`` -> ``map_batches`` over an actor pool of ``workers``);
    ``"local"``: the same class instantiated once in this process (debugging, tests, no Ray).
    """
    if executor == "local":
        actor = cls(**ctor)
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            out = actor({k: np.array([it[k] for it in chunk], dtype=object) for k in chunk[0]})
            for j in range(len(next(iter(out.values())))):
                yield {k: v[j] for k, v in out.items()}
        return
    if executor != "ray":
        raise ValueError(f"executor must be 'ray' or 'local' (got {executor!r})")
    import ray

    n_blocks = math.ceil(len(items) / batch_size)
    # one task in flight per actor: tasks are whole shards, so queueing more only unbalances the pool
    pool = ray.data.ActorPoolStrategy(size=max(1, min(workers, n_blocks)), max_tasks_in_flight_per_actor=1)
    ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        cls, fn_constructor_kwargs=ctor, batch_size=batch_size, compute=pool, num_cpus=cpus)
    with _own_progress():
        yield from ds.iter_rows()


def _ensure_ray() -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (or the one already initialised), else start a local Ray."""
    import ray

    if not ray.is_initialized():  # worker output stays in Ray's logs; the driver shows its own progress bar
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)


def _default_workers(cpus_per_worker: int) -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))


def _existing_state(out_dir: Path, planned: list[dict], fingerprint: str) -> tuple[set, list[Path]]:
    """Finished shard keys whose fingerprint matches; raise on foreign shards. Also stale temporary files."""
    import pyarrow.parquet as pq

    planned_paths = {shard_file(out_dir, p["split"], p["shard"]): (p["split"], p["shard"]) for p in planned}
    done, stale = set(), []
    for path in sorted(out_dir.glob("*/part-*.parquet")):
        try:
            meta = json.loads(pq.read_schema(path).metadata[META_KEY])
        except Exception:  # noqa: BLE001 - unreadable footer: not a finished shard
            stale.append(path)
            continue
        if meta.get("fingerprint") != fingerprint or path not in planned_paths:
            raise PreprocessError(
                f"{out_dir} holds shards from a different run (codec, text encoder, segment length, shard size "
                f"or manifest differ; first: {path}). Use --overwrite to replace them or choose another --out.")
        done.add(planned_paths[path])
    stale += sorted(out_dir.glob("*/.part-*.parquet.tmp-*"))
    return done, stale


def preprocess(cfg, dataset_dir: str | Path, codec: Any, out_dir: str | Path, *, vae: Any = None,
               workers: int | None = None,
               clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD, encode_batch: int = 8, cpus_per_worker: int = 1,
               overwrite: bool = False, codec_path: str | None = None, progress: bool = True,
               executor: str = "ray", fail_after_shards: int | None = None,
               fail_shards: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """Encode ``dataset_dir`` with ``codec`` (a path/hub id or a :class:`arfm.latents.Codec`) into ``out_dir``;
    with ``vae`` (a VAE folder) the shards also hold its latents (``vae_latent``).

    ``workers`` encoder actors of ``cpus_per_worker`` CPUs each (default: all CPUs of the Ray cluster);
    ``executor="local"`` runs the same code in this process without Ray. Returns a summary
    ``{"out", "written", "skipped", "splits", "seconds", "wall_s", "shard_compute_s", "model_load_s", "meta"}``
    (compute and model-load seconds summed over actors). Testing hooks:
    ``fail_after_shards`` raises in the driver after that many shards finished (a killed run);
    ``fail_shards`` makes the listed ``(split, shard)`` tasks raise inside the worker before writing.
    """
    from arfm.data.manifest import read_manifest

    t0 = time.time()
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    rows = read_manifest(dataset_dir)
    if not rows:
        raise PreprocessError(f"{dataset_dir}: the manifest has no rows")
    if overwrite and out_dir.exists():
        for p in [*out_dir.glob("*/part-*.parquet"), *out_dir.glob("*/.part-*.parquet.tmp-*"), out_dir / META_FILE]:
            p.unlink(missing_ok=True)
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local' (got {executor!r})")

    def n_workers() -> int:  # Ray starts only when there is work (a rerun that has nothing to do is quick)
        if executor == "ray":
            _ensure_ray()
            return workers or _default_workers(cpus_per_worker)
        return workers or 1

    codec_obj, codec_path = _resolve_codec(codec, out_dir, codec_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg_s = float(cfg.data.segment_seconds)
    settings: dict[str, Any] = {"dataset_dir": str(dataset_dir), "segment_seconds": seg_s,
                                "encode_batch": int(encode_batch), "threads": int(cpus_per_worker),
                                "own_process": executor == "ray"}
    if not codec_obj.has_normalization:
        _normalization(cfg, rows, codec_obj, codec_path, n_workers(), settings, progress, executor)
        codec_path = _store_normalization(codec_obj, codec_path, out_dir)
    vae_obj = vae_path = None
    if vae is not None:
        vae_obj, vae_path = _resolve_vae(vae, codec_obj)
        if not vae_obj.has_normalization:
            _normalization(cfg, rows, vae_obj, vae_path, n_workers(), settings, progress, executor,
                           n_segments=cfg.vae.norm_segments, what="the VAE")
            vae_path = _store_normalization(vae_obj, vae_path, out_dir, "vae")
    from arfm.text import text_encoder_info

    text = text_encoder_info(cfg.text)  # identity and dims for the metadata, without loading weights
    n_frames = codec_obj.n_frames(seg_s)
    meta = {"schema_version": SCHEMA_VERSION, "codec": codec_obj.identity, "codec_path": codec_path,
            "sample_rate": codec_obj.sample_rate, "frame_rate": codec_obj.frame_rate,
            "n_codebooks": codec_obj.n_codebooks, "codebook_size": codec_obj.codebook_size,
            "latent_dim": codec_obj.latent_dim, "n_frames": n_frames, "segment_seconds": seg_s,
            "text_encoder": text["identity"], "text_dim": text["dim"], "text_len": text["max_tokens"],
            "controls": list(CONTROLS), "latent_mean": codec_obj.mean, "latent_mean_std": codec_obj.mean_std,
            "representations": ["encodec"] + (["vae"] if vae_obj is not None else [])}
    if vae_obj is not None:
        meta.update({"vae": vae_obj.identity, "vae_path": vae_path, "vae_latent_dim": vae_obj.latent_dim,
                     "vae_latent_mean": vae_obj.mean, "vae_latent_mean_std": vae_obj.mean_std})
    stable = {k: v for k, v in meta.items() if k not in ("codec_path", "vae_path")}  # moving a folder: no change
    fingerprint = _digest({"meta": stable, "clips_per_shard": clips_per_shard, "manifest": _manifest_digest(rows)})
    settings.update(meta=meta, fingerprint=fingerprint, n_frames=n_frames, codec_identity=codec_obj.identity,
                    vae_path=vae_path)
    planned = plan_shards(rows, clips_per_shard)
    done, stale = _existing_state(out_dir, planned, fingerprint)
    for p in stale:
        p.unlink(missing_ok=True)
    pending = [p for p in planned if (p["split"], p["shard"]) not in done]
    fail = set(map(tuple, fail_shards))
    tasks = [{"task": json.dumps({"split": p["split"], "shard": p["shard"], "rows": p["rows"],
                                  "path": str(shard_file(out_dir, p["split"], p["shard"])),
                                  "fail": (p["split"], p["shard"]) in fail})} for p in pending]
    seconds_done = compute_s = init_s = 0.0
    if tasks:
        bar = None
        if progress:
            from tqdm import tqdm

            # a bar on a terminal; none in a log file (the summary line below says what was done)
            bar = tqdm(total=len(planned), initial=len(done), unit="shard", desc="preprocess", dynamic_ncols=True,
                       disable=None)
        try:
            ctor = {"codec_path": codec_path, "text_cfg": cfg.text.model_dump(), "settings": settings}
            finished, t_pass = 0, time.time()
            for res in _map(ShardEncoder, ctor, tasks, 1, n_workers(), cpus_per_worker, executor):
                finished += 1
                seconds_done += float(res["seconds"])
                compute_s += float(res["compute_s"])
                init_s += float(res["init_s"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(audio_s=f"{seconds_done:.0f}", rate=f"{seconds_done / (time.time() - t_pass):.1f}x")
                if fail_after_shards is not None and finished >= fail_after_shards:
                    raise RuntimeError(f"injected driver failure after {finished} shard(s)")
        finally:
            if bar is not None:
                bar.close()
    meta = {**meta, **_totals(out_dir, planned)}
    _write_json_atomic(out_dir / META_FILE, {**meta, "fingerprint": fingerprint})
    summary = {"out": str(out_dir), "written": len(tasks), "skipped": len(done), "splits": meta["splits"],
               "seconds": seconds_done, "wall_s": round(time.time() - t0, 3), "shard_compute_s": round(compute_s, 3),
               "model_load_s": round(init_s, 3), "meta": meta}
    if progress:
        print(f"shards: {len(tasks)} written, {len(done)} already done; rows {meta['splits']}; "
              f"{seconds_done:.0f} s of audio in {summary['wall_s']:.1f} s -> {out_dir}", flush=True)
    return summary


def _totals(out_dir: Path, planned: list[dict]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    splits: dict[str, int] = {}
    methods: set[str] = set()
    for p in planned:
        m = json.loads(pq.read_schema(shard_file(out_dir, p["split"], p["shard"])).metadata[META_KEY])
        splits[p["split"]] = splits.get(p["split"], 0) + int(m["rows"])
        methods.update(m.get("control_methods", []))
    for split in ("train", "valid"):
        splits.setdefault(split, 0)
    return {"splits": splits, "control_methods": sorted(methods),
            "shards": {s: sum(1 for p in planned if p["split"] == s) for s in splits}}


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)

