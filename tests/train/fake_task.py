"""A tiny regression Task for trainer tests (no dependency on arfm.models or the shard loader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
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


class CountingHandler(pafs.FileSystemHandler):
    """A pyarrow filesystem handler over the local disk that appends the path of every file opened for reading
    to ``log`` (one line per open, from any process)."""

    def __init__(self, log: str):
        self.log, self.fs = log, pafs.LocalFileSystem()

    def __reduce__(self):
        return (CountingHandler, (self.log,))

    def _note(self, path: str) -> None:
        with open(self.log, "a") as fh:
            fh.write(path + "\n")

    def __eq__(self, other):
        return isinstance(other, CountingHandler) and other.log == self.log

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        self._note(path)
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        self._note(path)
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


class RecordingRegressor(TinyRegressor):
    """Appends the row indices of every training batch it sees to ``log`` (JSON lines)."""

    def __init__(self, log: str, dim: int = 8):
        super().__init__(dim)
        self.log = log

    def forward(self, batch):
        if self.training:
            with open(self.log, "a") as fh:
                fh.write(json.dumps(batch["idx"].tolist()) + "\n")
        return super().forward(batch)


class FileFakeTask(FakeTask):
    """FakeTask rows stored in Parquet files and read through :class:`CountingHandler`; ``idx`` identifies each
    row in the batches the model records. It gives a size estimate, so the trainer holds it in memory."""

    def __init__(self, folder: str, rows: int = 40, valid_rows: int = 8, dim: int = 8, files: int = 4):
        super().__init__("fake", rows, dim)
        self.folder, self.valid_rows, self.files = folder, valid_rows, files
        self.reads, self.batches = f"{folder}/reads.log", f"{folder}/batches.jsonl"
        import pyarrow as pa
        import pyarrow.parquet as pq

        rng = np.random.default_rng(0)
        w = np.linspace(-1, 1, dim)
        for split, n in (("train", rows), ("valid", valid_rows)):
            Path(folder, split).mkdir(parents=True, exist_ok=True)
            xs = rng.normal(size=(n, dim)).astype(np.float32)
            for f in range(files if split == "train" else 1):
                idx = np.arange(n)[f::files] if split == "train" else np.arange(n)
                table = pa.table({"id": [f"{split}{i:04d}" for i in idx], "idx": idx.astype(np.int64),
                                  "x": list(xs[idx]), "y": (xs[idx] @ w).astype(np.float32)})
                pq.write_table(table, f"{folder}/{split}/part-{f}.parquet")

    def _read(self, split):
        import pyarrow.fs as pafs
        import ray.data

        fs = pafs.PyFileSystem(CountingHandler(self.reads))
        return ray.data.read_parquet(f"{self.folder}/{split}", filesystem=fs)

    def train_bytes(self, cfg):
        return self.rows * (self.dim + 2) * 8

    def train_dataset(self, cfg, mode="stream"):
        return self._read("train")

    def valid_dataset(self, cfg):
        return self._read("valid")

    def build_model(self, cfg):
        return RecordingRegressor(self.batches, self.dim)

    def collate(self, cfg, batch):
        out = super().collate(cfg, batch)
        out["idx"] = torch.as_tensor(np.asarray(batch["idx"]), dtype=torch.long)
        return out
