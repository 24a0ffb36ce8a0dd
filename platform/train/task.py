"""What a training job is, seen from the trainer: a :class:`Task`.

The trainer never branches on the paradigm. A task says how to build the model (whose ``forward(batch)``
returns a dict holding a scalar ``"loss"``), which Ray Dataset feeds it, how a numpy batch becomes tensors,
and how the final artifact is written. Tasks register themselves by name in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import ray.data
    import torch

    from arfm.config import JobConfig


@runtime_checkable
class Task(Protocol):
    name: str  # "codec" | "vae" | "ar" | "fm"

    def tags(self, cfg: "JobConfig") -> dict[str, str]:
        """MLflow tags this job adds (paradigm, conditioning, latent ...)."""

    def build_model(self, cfg: "JobConfig") -> "torch.nn.Module":
        """A fresh model; ``model(batch)`` returns ``{"loss": scalar, **scalar_metrics}``."""

    def train_dataset(self, cfg: "JobConfig") -> "ray.data.Dataset":
        """The training data as a Ray Dataset of rows (each worker gets its own split)."""

    def collate(self, cfg: "JobConfig", batch: dict[str, "np.ndarray"]) -> dict[str, Any]:
        """A numpy batch from the dataset -> the model's input dict of CPU tensors."""

    def finalize(self, cfg: "JobConfig", model: "torch.nn.Module", out_dir: Path) -> dict[str, float]:
        """Write the final artifact into ``out_dir`` (rank 0 only); return summary metrics to log."""


TASKS: dict[str, str] = {
    "codec": "arfm.train.tasks.codec:CodecTask",
    "vae": "arfm.train.tasks.vae:VAETask",
    "ar": "arfm.train.tasks.generative:GenerativeTask",
    "fm": "arfm.train.tasks.generative:GenerativeTask",
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, attr = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)(name)
