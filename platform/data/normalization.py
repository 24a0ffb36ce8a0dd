"""The latent spaces a preprocessing run encodes with (:mod:`arfm.data.preprocess`): the codec (a folder, a hub id
or an object) and the optional VAE, resolved to the folder every encoder actor loads, and their appendix E.2
normalization computed over random train segments in a parallel Ray Data pass when a latent has none yet."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


class NormStats:
    """Ray Data actor for the appendix E.2 statistics of a batch of segments (combined by the driver)."""

    def __init__(self, codec_path: str, settings: dict):
        import torch

        from arfm.latents import load_latent

        if settings.get("own_process"):
            torch.set_num_threads(max(1, int(settings.get("threads", 1))))
        self.codec = load_latent(codec_path)  # the EnCodec codec or the VAE
        self.s = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from arfm.data.preprocess import _read_audio, _segment_audio
        from arfm.latents import compute_normalization

        sr, seg_s = self.codec.sample_rate, self.s["segment_seconds"]
        segs = []
        for item in batch["item"]:
            row, start = json.loads(str(item))
            segs.append(_segment_audio(_read_audio(self.s["dataset_dir"], row, sr), start, seg_s, sr))
        mean, mean_std = compute_normalization(self.codec, segs, len(segs), batch_size=int(self.s["encode_batch"]),
                                               segment_seconds=seg_s)
        return {"n": [len(segs)], "mean": [mean], "mean_std": [mean_std]}


def _resolve_codec(codec: Any, out_dir: Path, codec_path: str | None):
    """``(Codec, path the actors load it from)``. A Codec object is saved under ``SHARDS/codec``."""
    from arfm.latents import CODEC_META, Codec

    if isinstance(codec, (str, Path)):
        path = str(codec_path or codec)
        if Path(path).expanduser().is_dir():
            path = str(Path(path).expanduser().resolve())
        loaded = Codec.load(str(codec))
        saved = out_dir / "codec" / CODEC_META
        if not loaded.has_normalization and saved.is_file():  # normalized by an earlier run into SHARDS/codec
            info = json.loads(saved.read_text())
            if info.get("weights_sha256") == loaded.weights_digest and info.get("normalization"):
                return Codec.load(out_dir / "codec"), str(out_dir / "codec")
        return loaded, path
    if codec_path:
        return codec, str(codec_path)
    target = out_dir / "codec"
    meta = target / CODEC_META
    if not (meta.is_file() and json.loads(meta.read_text()).get("identity") == codec.identity):
        codec.save(target)
    return codec, str(target)


def _store_normalization(codec, codec_path: str, out_dir: Path, sub: str = "codec") -> str:
    """Save the codec (or VAE) with its new statistics: into its own folder when writable, else under
    SHARDS/<sub>."""
    local = Path(codec_path)
    if local.is_dir() and os.access(local, os.W_OK):
        codec.save(local)
        return str(local)
    target = out_dir / sub
    codec.save(target)
    return str(target)


def _resolve_vae(vae: Any, codec) -> tuple[Any, str]:
    """``(VAELatent, folder the actors load it from)``; its frame and sample rates must be the codec's (the shards'
    frames and controls are shared by both latents)."""
    from arfm.data.preprocess import PreprocessError
    from arfm.vae_latent import VAELatent, VAEUnavailableError

    if isinstance(vae, (str, Path)):
        path = str(Path(vae).expanduser().resolve())
        try:
            obj = VAELatent.load(path)
        except VAEUnavailableError as exc:
            raise PreprocessError(f"--vae: {exc}") from None
    else:
        obj, path = vae, getattr(vae, "source", None)
        if not path or not Path(path).is_dir():
            raise PreprocessError("vae: pass the VAE's folder (a VAELatent object must have been saved)")
    if (obj.frame_rate, obj.sample_rate) != (codec.frame_rate, codec.sample_rate):
        raise PreprocessError(f"--vae {path}: {obj.frame_rate:g} Hz at {obj.sample_rate} Hz, but the codec is "
                              f"{codec.frame_rate:g} Hz at {codec.sample_rate} Hz; train the VAE at the codec's "
                              "frame rate (vae.frame_rate = codec.frame_rate)")
    return obj, path


def _normalization(cfg, rows, codec, codec_path, workers, settings, progress, executor,
                   n_segments: int | None = None, what: str = "codec") -> None:
    from arfm.data.preprocess import PreprocessError, _map, segment_plan

    seg_s = cfg.data.segment_seconds
    slots = [(r, start) for r in rows if r["split"] == "train" for _, start in segment_plan(r, seg_s)]
    if not slots:
        raise PreprocessError("the codec has no latent normalization and the manifest has no train rows to "
                              "compute it from (appendix E.2); run `arfm codec train` or add train clips")
    n = min(n_segments or cfg.codec.norm_segments, len(slots))
    rng = np.random.default_rng(cfg.data.seed)
    pick = sorted(rng.choice(len(slots), size=n, replace=False).tolist())
    items = [{"item": json.dumps(slots[i])} for i in pick]
    if progress:
        print(f"{what} has no latent normalization: computing it over {n} train segments (appendix E.2)",
              flush=True)
    per = max(1, min(4 * int(settings["encode_batch"]), math.ceil(n / workers)))
    parts = list(_map(NormStats, {"codec_path": codec_path, "settings": settings}, items, per, workers,
                      settings["threads"], executor))
    total = sum(int(p["n"]) for p in parts)
    mean = sum(float(p["mean"]) * int(p["n"]) for p in parts) / total
    mean_std = sum(float(p["mean_std"]) * int(p["n"]) for p in parts) / total
    codec.set_normalization(mean, mean_std, n_segments=total, segment_seconds=seg_s)
