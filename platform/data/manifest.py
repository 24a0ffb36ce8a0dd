"""The dataset folder shared by ``arfm data synth``, ``arfm data ingest`` and the preprocessing job.

Layout (see the "Dataset folder" contract)::

    DIR/manifest.jsonl    one JSON object per clip or segment
    DIR/audio/<id>.wav    32 kHz mono PCM_16

Each manifest row is ``{"id", "path" (relative to DIR), "caption", "split" ("train"|"valid"), "seconds",
"sample_rate", "labels"}`` where ``labels`` is the exact ground truth of a synthetic clip or ``null``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

MANIFEST_NAME = "manifest.jsonl"
AUDIO_DIR = "audio"
SPLITS = ("train", "valid")
REQUIRED_KEYS = ("id", "path", "caption", "split", "seconds", "sample_rate", "labels")


class ManifestError(ValueError):
    """The manifest is missing or a row does not follow the contract; the message names the line."""


def manifest_path(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / MANIFEST_NAME


def check_row(row: dict[str, Any], where: str = "row") -> None:
    """Raise :class:`ManifestError` when ``row`` does not follow the contract."""
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise ManifestError(f"{where}: missing key(s) {', '.join(missing)}")
    if not isinstance(row["id"], str) or not row["id"]:
        raise ManifestError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(row["caption"], str) or not row["caption"].strip():
        raise ManifestError(f"{where} (id {row['id']}): 'caption' must be a non-empty string")
    if row["split"] not in SPLITS:
        raise ManifestError(f"{where} (id {row['id']}): 'split' must be one of {SPLITS}, got {row['split']!r}")
    if row["labels"] is not None and not isinstance(row["labels"], dict):
        raise ManifestError(f"{where} (id {row['id']}): 'labels' must be an object or null")


def read_manifest(dataset_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``DIR/manifest.jsonl`` in file order (only ``split`` when given)."""
    path = manifest_path(dataset_dir)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; create one with `arfm data synth` or `arfm data ingest`")
    rows = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path} line {lineno}: expected a JSON object")
            check_row(row, f"{path} line {lineno}")
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


def write_manifest(dataset_dir: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``DIR/manifest.jsonl`` atomically (a temporary file renamed into place)."""
    path = manifest_path(dataset_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            check_row(row, f"row {i + 1}")
            fh.write(json.dumps(row, ensure_ascii=False, separators=(", ", ": ")) + "\n")
    os.replace(tmp, path)
    return path


def load_audio(dataset_dir: str | Path, row: dict[str, Any], sample_rate: int | None = None) -> np.ndarray:
    """The row's audio as mono ``float32[S]`` in [-1, 1].

    The file must have the manifest's sample rate (or ``sample_rate`` when given); this loader does not resample.
    """
    import soundfile as sf

    path = Path(dataset_dir) / row["path"]
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    expected = int(sample_rate or row.get("sample_rate") or sr)
    if sr != expected:
        raise ManifestError(f"{path}: sample rate {sr} Hz, expected {expected} Hz")
    return audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as PCM_16 WAV (clipped to [-1, 1]); deterministic bytes for the same input."""
    import soundfile as sf

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"save_audio expects mono audio [S], got shape {x.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(x, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
