"""A tiny regression Task for trainer tests (no dependency on arfm.models or the shard loader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from arfm.config import dump_yaml


class TinyRegressor(torch.nn.Module):
    def __init__(self, dim: int = 8, hidden: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def forward(self, batch):
        pred = self.net(batch["x"]).squeeze(-1)
        err = pred - batch["y"]
        return {"loss": (err**2).mean(), "mae": err.abs().mean()}


class FakeTask:
    """y = sum(x * w) for a fixed w; ``rows`` examples as a Ray Dataset built from items."""

    def __init__(self, name: str = "fake", rows: int = 64, dim: int = 8):
        self.name, self.rows, self.dim = name, rows, dim

    def tags(self, cfg):
        return {"paradigm": "fake", "latent": "none"}

    def build_model(self, cfg):
        return TinyRegressor(self.dim)

    def train_dataset(self, cfg):
        import ray.data

        rng = np.random.default_rng(0)
        w = np.linspace(-1, 1, self.dim)
        xs = rng.normal(size=(self.rows, self.dim)).astype(np.float32)
        return ray.data.from_items([{"x": x, "y": np.float32(x @ w)} for x in xs])

    def collate(self, cfg, batch):
        return {"x": torch.as_tensor(np.stack(batch["x"]), dtype=torch.float32),
                "y": torch.as_tensor(batch["y"], dtype=torch.float32)}

    def finalize(self, cfg, model, out_dir: Path):
        out_dir = Path(out_dir)
        torch.save(model.state_dict(), out_dir / "weights.pt")
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        (out_dir / "meta.json").write_text(json.dumps({"task": self.name, "dim": self.dim}))
        return {"n_params": sum(p.numel() for p in model.parameters())}
