"""From a job config and shard metadata to a generative model, and the saved-model format.

One place maps the platform's :class:`~arfm.config.ModelConfig` onto :func:`arfm.models.build.build_model`,
so training (the ``ar``/``fm`` tasks) and generation (:mod:`arfm.generate`) build the very same network.

A saved model is a folder holding ``config.yaml`` (the resolved job config), ``weights.pt`` (a plain
``state_dict``, loaded with ``weights_only=True``) and ``meta.json`` (the shard metadata: codec, frame rate,
latent and text dimensions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from arfm.config import JobConfig

CONFIG_FILE, WEIGHTS_FILE, META_FILE = "config.yaml", "weights.pt", "meta.json"


def representation_meta(meta: dict[str, Any], representation: str, shards: str = "the shards") -> dict[str, Any]:
    """The shard metadata as a model trained on ``representation`` sees it. For ``vae`` the latent fields are the
    VAE's (``latent_dim``, ``codec`` = its identity, ``codec_path`` = its folder, normalization), and the EnCodec
    codec stays under ``encodec`` (its tokens and drums remain in the shards). Raises naming
    ``model.representation`` when the shards hold no VAE latents."""
    if representation == "encodec":
        return meta
    if representation != "vae":
        raise ValueError(f"model.representation: {representation!r} is not one of encodec, vae")
    if "vae" not in (meta.get("representations") or []):
        raise ValueError(f"model.representation=vae: {shards} hold no VAE latents; preprocess them with the VAE "
                         "(`arfm data preprocess --vae VAE_DIR`, a folder written by `arfm codec train --kind vae`) "
                         "or use model.representation=encodec")
    return {**meta, "representation": "vae", "encodec": meta["codec"], "codec": meta["vae"],
            "codec_path": meta["vae_path"], "latent_dim": int(meta["vae_latent_dim"]),
            "latent_mean": meta.get("vae_latent_mean"), "latent_mean_std": meta.get("vae_latent_mean_std")}


def model_kwargs(cfg: JobConfig, meta: dict[str, Any]) -> dict[str, Any]:
    from arfm.controls import control_vocab

    m = cfg.model
    vocab = control_vocab(int(meta["codebook_size"]))
    missing = [c for c in m.controls if c not in (meta.get("controls") or vocab)]
    if missing:
        raise ValueError(f"model.controls: {missing} are not in the shards at {cfg.data.shards}; "
                         "preprocess them first")
    return dict(
        layers=m.layers, dim=m.dim, heads=m.heads, ffn=m.ffn, dropout=m.dropout, unet_skips=m.use_unet_skips,
        controls={c: vocab[c] for c in m.controls}, text_dropout=m.text_dropout,
        control_dropout=m.control_dropout, inpainting=m.inpainting, sigma_min=m.sigma_min,
        text_dim=int(meta["text_dim"]), n_codebooks=int(meta["n_codebooks"]),
        codebook_size=int(meta["codebook_size"]), latent_dim=int(meta["latent_dim"]),
    )


def build_generative(cfg: JobConfig, meta: dict[str, Any]) -> torch.nn.Module:
    from arfm.models.build import build_model

    return build_model(cfg.model.paradigm, **model_kwargs(cfg, meta))


def save_model_dir(cfg: JobConfig, meta: dict[str, Any], model: torch.nn.Module, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    return out


def save_untrained_model(cfg: JobConfig, out_dir: str | Path, controls: list[str] | None = None,
                         seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """An untrained model of ``cfg`` and its untrained codec (unit normalization), saved in the saved-model format
    under ``out_dir`` (``codec/`` and ``model/``), seeded without touching the global RNG; returns the model
    folder and the model. ``controls``: the control vocabularies in the metadata (default: the model's own).
    Served with ``--random-init`` and used by the tests: an untrained model goes through the same loading path
    as a trained one."""
    from arfm.latents import Codec
    from arfm.text import build_text_encoder

    out = Path(out_dir)
    codec = Codec.from_config(cfg.codec, cfg.data.sample_rate, seed=seed)
    codec.set_normalization(0.0, 1.0)
    codec.save(out / "codec")
    text = build_text_encoder(cfg.text)
    meta = {"codec": codec.identity, "codec_path": str(out / "codec"), "frame_rate": codec.frame_rate,
            "n_codebooks": codec.n_codebooks, "codebook_size": codec.codebook_size, "latent_dim": codec.latent_dim,
            "text_encoder": text.identity, "text_dim": text.dim,
            "controls": list(cfg.model.controls) if controls is None else list(controls), "untrained": True}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_generative(cfg, meta)
    return save_model_dir(cfg, meta, model, out / "model"), model


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> tuple[JobConfig, dict, torch.nn.Module]:
    p = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, META_FILE):
        if not (p / name).is_file():
            raise FileNotFoundError(f"{p} is not a saved arfm model: {name} is missing")
    cfg = JobConfig.model_validate(yaml.safe_load((p / CONFIG_FILE).read_text()))
    meta = json.loads((p / META_FILE).read_text())
    model = build_generative(cfg, meta)
    model.load_state_dict(torch.load(p / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return cfg, meta, model.to(device).eval()
