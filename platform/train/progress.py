"""One readable progress line per training job.

Rank 0 of a run writes ``<run folder>/progress.json`` (atomically) at every logging window, validation and at
the end: step, planned steps, loss, validation loss, steps/s, data-wait fraction, elapsed seconds, the time
budget and the state. Drivers watch these files - ``arfm train`` for its one run, the study grid for all its
running cells - and print one line per job and update::

    ar-50hz-4s-b8-text   step  1200/20000  loss 3.412  valid 3.508  9.6 steps/s  wait 1%  ETA 1m05s

Worker output itself stays in Ray's log files, so concurrent jobs never interleave raw logs on the console.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"


def write(run_dir: str | Path, state: dict[str, Any]) -> None:
    path = Path(run_dir) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{PROGRESS_FILE}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps({**state, "time": time.time()}))
    os.replace(tmp, path)


def read(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def eta_seconds(p: dict[str, Any]) -> float | None:
    """Seconds left: the smaller of the remaining steps at the current rate and the remaining time budget."""
    left = []
    rate, step, steps = p.get("steps_per_s"), p.get("step"), p.get("steps")
    if rate and step is not None and steps:
        left.append(max(0.0, (steps - step) / rate))
    budget, elapsed = p.get("budget_s"), p.get("elapsed_s")
    if budget and elapsed is not None:
        left.append(max(0.0, budget - elapsed))
    return min(left) if left else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def line(name: str, p: dict[str, Any] | None, width: int = 24) -> str:
    """The job's one progress line."""
    if not p:
        return f"{name:<{width}} starting"
    parts = [f"{name:<{width}}", f"step {p.get('step', 0):>6}/{p.get('steps', '?')}"]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.3f}")
    if p.get("valid_loss") is not None:
        parts.append(f"valid {p['valid_loss']:.3f}")
    if p.get("steps_per_s"):
        parts.append(f"{p['steps_per_s']:.1f} steps/s")
    if p.get("data_wait_frac") is not None:
        parts.append(f"wait {100 * p['data_wait_frac']:.0f}%")
    state = p.get("state", "training")
    if state == "training":
        parts.append(f"ETA {_clock(eta_seconds(p))}")
    else:
        parts.append(state)
    return "  ".join(parts)


def _key(p: dict[str, Any]) -> tuple:
    return p.get("step"), p.get("state"), p.get("valid_loss")


class Watcher:
    """Polls the progress files of running jobs and calls ``emit(line)`` for each job whose state changed, at
    most every ``interval`` seconds per job."""

    def __init__(self, emit: Callable[[str], Any], interval: float = 10.0, width: int = 24):
        self.emit, self.interval, self.width = emit, interval, width
        self._jobs: dict[str, Path] = {}
        self._last: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, run_dir: str | Path) -> None:
        with self._lock:
            self._jobs[name] = Path(run_dir)

    def remove(self, name: str, final: bool = True) -> None:
        """Stop watching ``name``; with ``final``, print its last state unless that line was printed already."""
        with self._lock:
            run_dir = self._jobs.pop(name, None)
        if final and run_dir is not None:
            p = read(run_dir)
            if p is not None and _key(p) != self._last.get(name, (0.0, None))[1]:
                self.emit(line(name, p, self.width))

    def poll(self) -> None:
        now = time.time()
        with self._lock:
            jobs = list(self._jobs.items())
        for name, run_dir in jobs:
            p = read(run_dir)
            if p is None:
                continue
            key = _key(p)
            last_t, last_key = self._last.get(name, (0.0, None))
            if key != last_key and now - last_t >= self.interval:
                self._last[name] = (now, key)
                self.emit(line(name, p, self.width))

    def __enter__(self) -> "Watcher":
        def loop():
            while not self._stop.wait(1.0):
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - a progress line must never stop a job
                    pass

        self._thread = threading.Thread(target=loop, daemon=True, name="arfm-progress")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
