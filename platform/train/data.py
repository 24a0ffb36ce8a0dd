"""Training and validation batches for one worker: read the data once, then epoch after epoch without waiting.

``train.data_mode`` says how (``auto``: ``memory`` when the task's estimate of its training split fits in
``train.memory_gb``, else ``stream``); :func:`plan` decides it on the driver, once per run.

* ``memory`` - the driver materializes the task's Ray Dataset once (every shard file is read once per run),
  with Ray Data's order preserved, and splits it into one equal part per worker. Each worker copies its part
  into local tensors once, sorted by row ``id``, in a background thread that overlaps the model's and
  DeepSpeed's start. Epoch ``e`` is the permutation drawn from ``(train.seed, e, rank)``; a step gathers rows
  by index. The position saved in a checkpoint is ``(epoch, batch index)``, so a restarted worker sees exactly
  the batches an uninterrupted one would have seen. A task can build each epoch from the cached rows in its
  own way (the codec: fresh random crops of whole clips, drawn from the same seeds).
* ``stream`` - for a split larger than memory: Ray Data streams the worker's split; a background thread runs
  epoch after epoch and keeps ``train.prefetch_batches`` collated batches ready, so the next epoch's start-up
  overlaps with training. Resume fast-forwards ``pos`` batches into the epoch.

Validation rows (at most ``train.valid_max_rows``) are always held in memory; each worker scores an equal share.
The plain loop (:mod:`arfm.train.local`) uses the same epochs over the same caches, read without Ray.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from arfm.config import JobConfig

MEMORY, STREAM = "memory", "stream"
ID = "id"


# --------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class DataPlan:
    mode: str  # "memory" | "stream"
    train_bytes: int | None  # the task's estimate of the training split in memory
    reason: str

    def describe(self) -> str:
        size = f"{self.train_bytes / 2**20:.0f} MiB" if self.train_bytes is not None else "size unknown"
        return f"{self.mode} ({size}; {self.reason})"


def plan(cfg: "JobConfig", task: Any) -> DataPlan:
    """Memory or stream for this run (``train.data_mode``; ``auto`` compares the task's estimate with
    ``train.memory_gb``)."""
    t = cfg.train
    estimate = getattr(task, "train_bytes", None)
    nbytes = int(estimate(cfg)) if estimate is not None else None
    if t.data_mode != "auto":
        return DataPlan(t.data_mode, nbytes, "train.data_mode")
    if nbytes is None:
        return DataPlan(STREAM, None, "the task gives no size estimate")
    limit = t.memory_gb * 2**30
    if nbytes <= limit:
        return DataPlan(MEMORY, nbytes, f"fits in train.memory_gb={t.memory_gb:g}")
    return DataPlan(STREAM, nbytes, f"larger than train.memory_gb={t.memory_gb:g}")


def driver_datasets(cfg: "JobConfig", task: Any, data_plan: DataPlan) -> tuple[dict[str, Any], list[str]]:
    """The Ray Datasets handed to the trainer and the names Ray Train should split between workers.

    memory: ``train_<rank>`` (one materialized, equal part per worker; each file read once here); stream:
    ``train`` (streamed and split by Ray Train). ``valid``, when the task has one, is never split."""
    from ray.data import DataContext

    workers = cfg.train.workers
    ds = task.train_dataset(cfg, data_plan.mode) if _takes_mode(task.train_dataset) else task.train_dataset(cfg)
    datasets: dict[str, Any] = {}
    split: list[str] = []
    if data_plan.mode == MEMORY:
        ctx = DataContext.get_current()
        before = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True  # the same rows in the same parts on every (re)start
        try:
            mat = ds.materialize()
            parts = mat.split(workers, equal=True) if workers > 1 else [mat]
        finally:
            ctx.execution_options.preserve_order = before
        datasets.update({f"train_{r}": p for r, p in enumerate(parts)})
    else:
        datasets["train"] = ds
        split.append("train")
    valid = getattr(task, "valid_dataset", None)
    if valid is not None and cfg.train.valid_every:
        vds = valid(cfg)
        if vds is not None:
            datasets["valid"] = vds.limit(cfg.train.valid_max_rows).materialize()
    return datasets, split


def _takes_mode(fn: Any) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ row caches
def read_rows(batches: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Concatenate numpy batches (``batch_format="numpy"``) into columns, rows sorted by ``id`` when present."""
    cols: dict[str, list[np.ndarray]] = {}
    for b in batches:
        for k, v in b.items():
            cols.setdefault(k, []).append(_column(v))
    out = {k: (np.concatenate(v) if len(v) > 1 else v[0]) for k, v in cols.items()}
    if ID in out and len(out[ID]):
        order = np.argsort(out[ID].astype(str), kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _column(v: Any) -> np.ndarray:
    """A block's column as numpy: fixed-size rows stay an ``[n, ...]`` array, ragged rows an object array."""
    if isinstance(v, np.ndarray):
        return v
    out = np.empty(len(v), dtype=object)
    out[:] = [np.asarray(x) for x in v]
    return out


def n_rows(cols: dict[str, np.ndarray]) -> int:
    return len(next(iter(cols.values()))) if cols else 0


def take(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cols.items()}


def share(cols: dict[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """Rows ``rank, rank + world, ...`` of the first ``world * floor(n / world)`` rows (equal shares)."""
    n = (n_rows(cols) // world) * world
    return take(cols, np.arange(rank, n, world))


# -------------------------------------------------------------------------------------- epochs in memory
class Epochs(Protocol):
    """What a worker iterates in memory mode: ``n_batches`` per epoch, and batch ``pos`` of epoch ``epoch``."""

    n_batches: int

    def batch(self, epoch: int, pos: int) -> dict[str, Any]: ...


def epoch_rng(seed: int, epoch: int, rank: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(rank), *map(int, more)])


class TensorEpochs:
    """Collated tensors ``[N, ...]`` of one worker; each epoch a fresh permutation, batches of ``micro`` rows
    (the last partial batch of an epoch is dropped)."""

    def __init__(self, tensors: dict[str, "torch.Tensor"], micro: int, seed: int, rank: int = 0):
        import torch

        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        self.n = len(next(iter(self.tensors.values()))) if self.tensors else 0
        self.micro, self.seed, self.rank = micro, seed, rank
        self.n_batches = self.n // micro
        self._perm: tuple[int, "torch.Tensor"] | None = None

    def _permutation(self, epoch: int) -> "torch.Tensor":
        import torch

        if self._perm is None or self._perm[0] != epoch:
            order = epoch_rng(self.seed, epoch, self.rank).permutation(self.n)
            self._perm = (epoch, torch.from_numpy(order))
        return self._perm[1]

    def batch(self, epoch: int, pos: int) -> dict[str, Any]:
        idx = self._permutation(epoch)[pos * self.micro:(pos + 1) * self.micro]
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}


def memory_epochs(task: Any, cfg: "JobConfig", cols: dict[str, np.ndarray], micro: int, rank: int) -> Epochs:
    """The task's own epochs over cached rows (``task.memory_epochs``), else shuffled collated tensors."""
    own = getattr(task, "memory_epochs", None)
    if own is not None:
        return own(cfg, cols, micro, cfg.train.seed, rank)
    return TensorEpochs(task.collate(cfg, {k: v for k, v in cols.items() if k != ID}), micro, cfg.train.seed, rank)


class Feed:
    """Batches forever from ``(epoch, pos)`` on; ``position`` is what the *next* batch will be, i.e. what a
    checkpoint taken now must store."""

    epoch: int
    pos: int

    def __next__(self) -> dict[str, Any]: ...

    def __iter__(self) -> "Feed":
        return self

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.pos


class MemoryFeed(Feed):
    def __init__(self, epochs: Epochs, epoch: int = 0, pos: int = 0):
        if epochs.n_batches < 1:
            raise RuntimeError("the training data gave no full batch: use a smaller train.batch_size or more data")
        self.epochs, self.epoch, self.pos = epochs, epoch, pos
        if self.pos >= epochs.n_batches:  # resumed exactly at an epoch's end
            self.epoch, self.pos = self.epoch + 1, 0

    def __next__(self) -> dict[str, Any]:
        b = self.epochs.batch(self.epoch, self.pos)
        self.pos += 1
        if self.pos >= self.epochs.n_batches:
            self.epoch, self.pos = self.epoch + 1, 0
        return b


class LazyFeed(Feed):
    """A feed built in a background thread (reading the cache overlaps the model's start); the first
    ``next`` waits for it."""

    def __init__(self, build):
        pool = ThreadPoolExecutor(1, thread_name_prefix="arfm-data")
        self._future: Future = pool.submit(build)
        pool.shutdown(wait=False)
        self._feed: Feed | None = None

    def _get(self) -> Feed:
        if self._feed is None:
            self._feed = self._future.result()
        return self._feed

    def __next__(self) -> dict[str, Any]:
        return next(self._get())

    @property
    def position(self) -> tuple[int, int]:
        return self._get().position

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self._get().epoch

    @property
    def pos(self) -> int:  # type: ignore[override]
        return self._get().pos


# ---------------------------------------------------------------------------------------- streamed epochs
_END = object()


class StreamFeed(Feed):
    """Ray Data batches epoch after epoch from a background thread, ``prefetch`` collated batches ahead."""

    def __init__(self, iterator: Any, task: Any, cfg: "JobConfig", micro: int, rank: int, epoch: int = 0,
                 pos: int = 0, prefetch: int = 8):
        self.epoch, self.pos = epoch, pos
        self._q: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        args = (iterator, task, cfg, micro, rank, epoch, pos)
        self._thread = threading.Thread(target=self._produce, args=args, daemon=True, name="arfm-stream")
        self._thread.start()

    def _produce(self, it, task, cfg, micro, rank, epoch, pos) -> None:
        try:
            skip = pos
            while not self._stop.is_set():
                n = 0
                for np_batch in it.iter_batches(batch_size=micro, batch_format="numpy", drop_last=True,
                                                local_shuffle_buffer_size=max(4 * micro, 64),
                                                local_shuffle_seed=cfg.train.seed + 7919 * epoch + rank):
                    n += 1
                    if n <= skip:  # fast-forward to the saved position
                        continue
                    self._q.put((epoch, n, task.collate(cfg, np_batch)))
                    if self._stop.is_set():
                        return
                if n == 0:
                    raise RuntimeError(f"worker {rank}: the training dataset gave no batch of {micro} rows; "
                                       "use a smaller train.batch_size or more data")
                epoch, skip = epoch + 1, 0
                self._q.put((epoch, 0, None))  # epoch boundary marker: the position moves to (epoch + 1, 0)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training loop
            self._q.put((None, None, exc))

    def __next__(self) -> dict[str, Any]:
        while True:
            epoch, n, item = self._q.get()
            if isinstance(item, BaseException):
                raise item
            self.epoch, self.pos = epoch, n
            if item is not None:
                return item

    def close(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------------------------------ validation
class Validation:
    """A fixed list of collated validation batches (the same every time, so the curve compares like with like)."""

    def __init__(self, batches: list[dict[str, Any]], rows: int):
        self.batches, self.rows = batches, rows

    @classmethod
    def from_rows(cls, task: Any, cfg: "JobConfig", cols: dict[str, np.ndarray], batch: int, rank: int = 0,
                  world: int = 1) -> "Validation | None":
        if not cols or n_rows(cols) < world:
            return None
        mine = share(cols, rank, world)
        own = getattr(task, "valid_batches", None)
        if own is not None:
            return cls(list(own(cfg, mine, batch)), n_rows(mine))
        data = {k: v for k, v in mine.items() if k != ID}
        tensors = task.collate(cfg, data)
        n = n_rows(mine)
        batches = [{k: v[i:i + batch] for k, v in tensors.items()} for i in range(0, n, batch)]
        return cls(batches, n)


def validation_loss(model: Any, batches: Iterable[dict[str, Any]], to_device, seed: int) -> tuple[float, int]:
    """(sum of per-batch mean loss x rows, rows) over ``batches`` in eval mode, with the model's random draws
    (FM's t and noise, random inpainting spans) fixed by ``seed`` so that successive validations compare."""
    import torch

    was_training = model.training
    model.eval()
    total, rows = 0.0, 0
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for b in batches:
                n = next(v.shape[0] for v in b.values() if isinstance(v, torch.Tensor))
                out = model(to_device(b))
                total += float(out["loss"].float()) * n
                rows += n
    finally:
        model.train(was_training)
    return total, rows


def iter_np(source: Any, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Numpy batches of a Ray ``DataIterator`` or ``Dataset``, one pass."""
    return source.iter_batches(batch_size=batch_size, batch_format="numpy")
