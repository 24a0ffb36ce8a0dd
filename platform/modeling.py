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
