"""The ``ar`` and ``fm`` training tasks: one class, the paradigm is data.

The model comes from :func:`arfm.modeling.build_generative`; the data are the Parquet shards of
``cfg.data.shards`` read through Ray Data; the final artifact is a saved-model folder
(:func:`arfm.modeling.save_model_dir`) that :mod:`arfm.generate` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arfm.config import JobConfig


class GenerativeTask:
    def __init__(self, name: str) -> None:
        if name not in ("ar", "fm"):
            raise ValueError(f"task: {name!r} is not a generative paradigm (ar | fm)")
        self.name = name
        self._meta: dict[str, Any] | None = None

    def _check(self, cfg: JobConfig) -> None:
        if cfg.model.paradigm != self.name:
            raise ValueError(f"model.paradigm is {cfg.model.paradigm!r} but the task is {self.name!r}; "
                             f"set --set model.paradigm={self.name}")

    def meta(self, cfg: JobConfig) -> dict[str, Any]:
        """The shards' metadata as the model sees it (the VAE's latent fields for ``model.representation=vae``)."""
        if self._meta is None:
            from arfm.data.loader import read_meta
            from arfm.modeling import representation_meta

            self._meta = representation_meta(read_meta(cfg.data.shards), cfg.model.representation,
                                              f"the shards at data.shards={cfg.data.shards}")
        return self._meta

    def tags(self, cfg: JobConfig) -> dict[str, str]:
        conditioning = "inpainting" if cfg.model.inpainting != "none" else ("controls" if cfg.model.controls
                                                                            else "text")
        return {"paradigm": self.name, "conditioning": conditioning, "latent": cfg.model.representation,
                "representation": cfg.model.representation,
                "frame_rate": str(cfg.codec.frame_rate), "duration": f"{cfg.data.segment_seconds:g}",
                "batch_size": str(cfg.train.batch_size)}

    def build_model(self, cfg: JobConfig):
        from arfm.modeling import build_generative

        self._check(cfg)
        return build_generative(cfg, self.meta(cfg))

    def columns(self, cfg: JobConfig) -> list[str]:
        """What the model reads: its representation (RVQ tokens for AR, the EnCodec or VAE latent for FM), the text
        features and the controls it is conditioned on (plus ``id``, which orders the rows)."""
        main = "tokens" if self.name == "ar" else ("vae_latent" if cfg.model.representation == "vae" else "latent")
        return ["id", main, "text", "text_mask", *cfg.model.controls]

    def train_bytes(self, cfg: JobConfig) -> int:
        """The training split as collated tensors (int64 tokens and controls, float32 latent and text)."""
        m = self.meta(cfg)
        k, t, d = int(m["n_codebooks"]), int(m["n_frames"]), int(m["latent_dim"])
        per_col = {"tokens": 8 * k * t, "latent": 4 * t * d, "vae_latent": 4 * t * d, "text": 4 * int(m["text_len"]) * int(m["text_dim"]),
                   "text_mask": int(m["text_len"]), "chords": 8 * t, "melody": 8 * t, "drums": 8 * t}
        row = sum(per_col.get(c, 0) for c in self.columns(cfg))
        return row * int((m.get("splits") or {}).get("train", 0))

    def train_dataset(self, cfg: JobConfig, mode: str = "stream"):
        from arfm.data.loader import shard_dataset

        return shard_dataset(cfg.data.shards, "train", columns=self.columns(cfg))

    def read_rows(self, cfg: JobConfig, split: str) -> dict[str, Any]:
        """A split's columns without Ray (each shard file read once), for the plain loop's memory mode."""
        from arfm.data.loader import read_columns

        return read_columns(cfg.data.shards, split, self.columns(cfg))

    def valid_dataset(self, cfg: JobConfig):
        from arfm.data.loader import shard_dataset

        if not int((self.meta(cfg).get("splits") or {}).get("valid", 0)):
            return None
        return shard_dataset(cfg.data.shards, "valid", columns=self.columns(cfg))

    def collate(self, cfg: JobConfig, batch: dict[str, Any]) -> dict[str, Any]:
        from arfm.data.loader import collate

        return collate(batch, self.meta(cfg))

    def finalize(self, cfg: JobConfig, model, out_dir: Path) -> dict[str, float]:
        from arfm.modeling import save_model_dir

        save_model_dir(cfg, self.meta(cfg), model, out_dir)
        return {"parameters": float(sum(p.numel() for p in model.parameters()))}
