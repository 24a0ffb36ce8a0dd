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
        if self._meta is None:
            from arfm.data.loader import read_meta

            self._meta = read_meta(cfg.data.shards)
        return self._meta

    def tags(self, cfg: JobConfig) -> dict[str, str]:
        conditioning = "inpainting" if cfg.model.inpainting != "none" else ("controls" if cfg.model.controls
                                                                            else "text")
        return {"paradigm": self.name, "conditioning": conditioning, "latent": "encodec",
                "frame_rate": str(cfg.codec.frame_rate), "duration": f"{cfg.data.segment_seconds:g}",
                "batch_size": str(cfg.train.batch_size)}

    def build_model(self, cfg: JobConfig):
        from arfm.modeling import build_generative

        self._check(cfg)
        return build_generative(cfg, self.meta(cfg))

    def train_dataset(self, cfg: JobConfig):
        from arfm.data.loader import shard_dataset

        return shard_dataset(cfg.data.shards, "train")

    def collate(self, cfg: JobConfig, batch: dict[str, Any]) -> dict[str, Any]:
        from arfm.data.loader import collate

        return collate(batch, self.meta(cfg))

    def finalize(self, cfg: JobConfig, model, out_dir: Path) -> dict[str, float]:
        from arfm.modeling import save_model_dir

        save_model_dir(cfg, self.meta(cfg), model, out_dir)
        return {"parameters": float(sum(p.numel() for p in model.parameters()))}
