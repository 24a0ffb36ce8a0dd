"""Training batches from the Parquet shards written by ``arfm data preprocess`` (both paradigms).

* :func:`read_meta` - the shard folder's ``meta.json`` (codec identity, shapes, splits).
* :func:`shard_dataset` - a ``ray.data.Dataset`` over one split (for Ray Train: ``ds.iter_torch_batches(
  collate_fn=lambda b: collate(b, meta))`` or ``ds.iter_batches`` + :func:`collate`).
* :func:`collate` - a numpy batch (dict of columns) -> dict of torch tensors with the contract shapes:
  ``tokens`` long[B,K,T], ``latent`` float[B,T,D] (normalized), ``text`` float[B,L,Dt], ``text_mask`` bool[B,L],
  ``chords``/``melody``/``drums`` long[B,T] - only the columns present in the batch.
* :func:`iter_batches` - the same batches with plain pyarrow (no Ray), for tests and simple loops; reads only
  the columns asked for (AR needs ``tokens``, FM ``latent``) and shuffles files, then rows within a buffer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

META_FILE = "meta.json"
TENSOR_COLUMNS = ("tokens", "latent", "vae_latent", "text", "text_mask", "chords", "melody", "drums")
INFO_COLUMNS = ("id", "caption")


class ShardsError(FileNotFoundError):
    """The shard folder is missing or incomplete."""


def read_meta(shards_dir: str | Path) -> dict[str, Any]:
    path = Path(shards_dir) / META_FILE
    if not path.is_file():
        raise ShardsError(f"{path}: no shard metadata; run `arfm data preprocess --out {shards_dir}` first")
    return json.loads(path.read_text())


def shard_files(shards_dir: str | Path, split: str) -> list[Path]:
    files = sorted((Path(shards_dir) / split).glob("part-*.parquet"))
    if not files:
        raise ShardsError(f"{Path(shards_dir) / split}: no shards for split {split!r}; run `arfm data preprocess`")
    return files


def shard_dataset(shards_dir: str | Path, split: str, columns: list[str] | None = None):
    """``ray.data.Dataset`` over ``SHARDS/<split>/part-*.parquet`` (hidden temporary files are never read)."""
    import ray.data

    shard_files(shards_dir, split)  # clear error when empty
    return ray.data.read_parquet(str(Path(shards_dir) / split), columns=columns, file_extensions=["parquet"])


def _stack(col: Any) -> np.ndarray:
    """A column as a 2-D array: already 2-D, an object array / list of 1-D arrays, or an Arrow list column."""
    if hasattr(col, "to_numpy") and hasattr(col, "type"):  # pyarrow (Chunked)Array of lists
        import pyarrow as pa

        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        n = len(arr)
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1) if n else flat.reshape(0, 0)
    if isinstance(col, np.ndarray) and col.dtype != object:
        return col.reshape(len(col), -1)
    rows = [np.asarray(x) for x in col]
    return np.stack(rows) if rows else np.zeros((0, 0))


def collate(np_batch: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Numpy (or Arrow) columns -> the training batch of torch tensors (see module docstring)."""
    import torch

    k, t, d = int(meta["n_codebooks"]), int(meta["n_frames"]), int(meta["latent_dim"])
    dt, length = int(meta["text_dim"]), int(meta["text_len"])
    out: dict[str, Any] = {}
    # vae_latent: the VAE's latent, handed to the model as "latent" (the meta of a model trained on it gives its
    # latent_dim: arfm.modeling.representation_meta)
    shapes = {"tokens": (k, t), "latent": (t, d), "vae_latent": (t, d), "text": (length, dt),
              "text_mask": (length,)}
    if "latent" in np_batch and "vae_latent" in np_batch:
        raise ValueError("a batch holds one latent: read either the latent or the vae_latent column")
    for name in TENSOR_COLUMNS:
        if name not in np_batch:
            continue
        arr = _stack(np_batch[name])
        dtype = np.float32 if name in ("latent", "vae_latent", "text") else bool if name == "text_mask" else np.int64
        shape = shapes.get(name, (t,))
        if arr.shape[1:] != (int(np.prod(shape)),) and arr.shape[1:] != shape:
            raise ValueError(f"column {name!r}: {arr.shape[1:]} values per row, meta expects {shape}")
        arr = np.array(arr, dtype=dtype, copy=not arr.flags.writeable or arr.dtype != dtype)
        out["latent" if name == "vae_latent" else name] = torch.from_numpy(arr.reshape((arr.shape[0], *shape)))
    return out


def read_columns(shards_dir: str | Path, split: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Every row of ``split`` as numpy columns (plain pyarrow, each shard file read once): ``id``/``caption`` as
    object arrays, tensor columns as ``[rows, values]`` arrays; rows sorted by ``id``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    unknown = set(columns) - set(TENSOR_COLUMNS) - set(INFO_COLUMNS)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}; choose from {TENSOR_COLUMNS + INFO_COLUMNS}")
    table = pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_files(shards_dir, split)])
    out = {c: (np.asarray(table.column(c).to_pylist(), dtype=object) if c in INFO_COLUMNS
               else _stack(table.column(c))) for c in columns}
    if "id" in out:
        order = np.argsort(out["id"].astype(str), kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _take(table, idx: np.ndarray):
    import pyarrow as pa

    return table.take(pa.array(idx, pa.int64()))


def iter_batches(shards_dir: str | Path, split: str, batch_size: int, shuffle: bool = True, seed: int = 0,
                 *, columns: list[str] | None = None, drop_last: bool = False, buffer_rows: int = 4096,
                 with_info: bool = False) -> Iterator[dict[str, Any]]:
    """One pass over ``split`` in batches (plain pyarrow, no Ray).

    ``columns``: tensor columns to read (default all). ``shuffle``: file order and rows within a buffer of
    ``buffer_rows`` are permuted with ``seed`` (pass ``seed + epoch`` for a new order each epoch).
    ``with_info`` adds ``"id"`` and ``"caption"`` lists to each batch.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    meta = read_meta(shards_dir)
    files = shard_files(shards_dir, split)
    rng = np.random.default_rng(seed)
    if shuffle:
        files = [files[i] for i in rng.permutation(len(files))]
    default = [c for c in TENSOR_COLUMNS if c != "vae_latent"]  # the VAE's latent is read when asked for
    wanted = [c for c in (columns or default) if c in TENSOR_COLUMNS]
    unknown = set(columns or ()) - set(TENSOR_COLUMNS) - set(INFO_COLUMNS)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}; choose from {TENSOR_COLUMNS}")
    read_cols = wanted + (list(INFO_COLUMNS) if with_info else [])

    def emit(table) -> dict[str, Any]:
        batch = collate({c: table.column(c) for c in wanted}, meta)
        if with_info:
            batch["id"] = table.column("id").to_pylist()
            batch["caption"] = table.column("caption").to_pylist()
        return batch

    buffer = None
    for i, path in enumerate(files):
        table = pq.read_table(path, columns=read_cols)
        buffer = table if buffer is None else pa.concat_tables([buffer, table])
        last = i == len(files) - 1
        if buffer.num_rows < buffer_rows and not last:
            continue
        if shuffle:
            buffer = _take(buffer, rng.permutation(buffer.num_rows))
        n_full = buffer.num_rows // batch_size
        for j in range(n_full):
            yield emit(buffer.slice(j * batch_size, batch_size))
        buffer = buffer.slice(n_full * batch_size)
    if buffer is not None and buffer.num_rows and not drop_last:
        yield emit(buffer)
