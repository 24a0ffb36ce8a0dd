"""``arfm data ingest``: turn a user's own audio corpus into a dataset folder (see :mod:`arfm.data.manifest`).

Sources come from a manifest (``.jsonl`` objects or ``.csv`` rows with ``path``, ``caption`` and an optional
``split``; relative paths are relative to the manifest's folder) or from a folder of audio files with sidecar
``.txt`` captions (``song.wav`` + ``song.txt``). Each file is decoded with soundfile, mixed to mono, resampled
with ``scipy.signal.resample_poly`` and cut into fixed-length segments (a trailing remainder shorter than a
segment is dropped, and so are silent segments).

Files that cannot be used (missing, empty, truncated, unreadable or corrupt, too short, silent) are skipped and
listed by path and reason in ``DIR/report.json``; they never stop the job. A row without a caption is a user
error in the manifest itself: the whole job stops before any audio is written, naming every such row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arfm.data.manifest import AUDIO_DIR, SPLITS, save_audio, write_manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64")
PATH_KEYS = ("path", "audio", "file")
CAPTION_KEYS = ("caption", "text", "description")
REPORT_NAME = "report.json"


class IngestError(ValueError):
    """The input listing itself is wrong (no caption, no path, bad split); names the rows."""


@dataclass
class Source:
    row: int  # 1-based data row (JSONL: non-empty line; CSV: row after the header; folder: file)
    line: int  # line number in the manifest file (0 for a folder)
    path: str  # absolute path of the audio file
    shown: str  # the path as the user wrote it (or relative to the folder)
    caption: str
    split: str | None


class BadFile(Exception):
    """A file that is skipped; ``str(exc)`` is the reason written to the report."""


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def read_sources(manifest: str | Path) -> list[Source]:
    """Rows of a ``.jsonl`` or ``.csv`` listing; raises :class:`IngestError` naming every bad row."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise IngestError(f"--manifest {manifest}: no such file")
    base = manifest.parent
    records: list[tuple[int, int, dict[str, Any]]] = []
    errors: list[str] = []
    if manifest.suffix.lower() == ".csv":
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if not any(k in fields for k in PATH_KEYS):
                raise IngestError(f"{manifest}: the CSV header needs a 'path' column (found {fields or 'none'})")
            for i, rec in enumerate(reader, 1):
                records.append((i, reader.line_num, {(k or "").strip().lower(): v for k, v in rec.items()}))
    elif manifest.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        row = 0
        for lineno, text in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            row += 1
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                errors.append(f"row {row} (line {lineno}): not valid JSON ({exc.msg})")
                continue
            if not isinstance(rec, dict):
                errors.append(f"row {row} (line {lineno}): expected a JSON object")
                continue
            records.append((row, lineno, rec))
    else:
        raise IngestError(f"--manifest {manifest}: expected a .jsonl or .csv file")

    sources = []
    for row, lineno, rec in records:
        where = f"row {row} (line {lineno} of {manifest.name})"
        raw_path = _first(rec, PATH_KEYS)
        if raw_path is None or not str(raw_path).strip():
            errors.append(f"{where}: missing path")
            continue
        shown = str(raw_path).strip()
        caption = _first(rec, CAPTION_KEYS)
        if caption is None or not str(caption).strip():
            errors.append(f"{where}, path {shown!r}: missing caption")
            continue
        split = rec.get("split")
        split = str(split).strip() if split is not None and str(split).strip() else None
        if split is not None and split not in SPLITS:
            errors.append(f"{where}, path {shown!r}: split must be one of {', '.join(SPLITS)} (got {split!r})")
            continue
        p = Path(shown).expanduser()
        sources.append(Source(row, lineno, str(p if p.is_absolute() else base / p), shown,
                              " ".join(str(caption).split()), split))
    if errors:
        raise IngestError(_errors_message(manifest, errors))
    return sources


def folder_sources(folder: str | Path) -> list[Source]:
    """Audio files under ``folder`` (recursively, sorted) with their sidecar ``.txt`` captions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"--folder {folder}: no such directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise IngestError(f"--folder {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    sources, errors = [], []
    for row, p in enumerate(files, 1):
        shown = str(p.relative_to(folder))
        side = p.with_suffix(".txt")
        caption = side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else ""
        if not caption:
            errors.append(f"row {row}, path {shown!r}: missing caption (no non-empty sidecar {side.name})")
            continue
        sources.append(Source(row, 0, str(p), shown, " ".join(caption.split()), None))
    if errors:
        raise IngestError(_errors_message(folder, errors))
    return sources


def _errors_message(where: Path, errors: list[str]) -> str:
    shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
    return f"{where}: {len(errors)} row(s) cannot be ingested; nothing was written:\n  " + "\n  ".join(shown)


def wav_truncation(path: str | Path) -> str | None:
    """A reason when a RIFF/WAVE file's data chunk declares more bytes than the file holds, else None.

    libsndfile silently reads what is there, so a cut-off download would otherwise pass as a shorter file.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "little" if head[:4] == b"RIFF" else "big"
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            cid, csize = chunk[:4], int.from_bytes(chunk[4:8], order)
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                available = size - pos - 8
                if available < csize:
                    return (f"truncated: the header declares {csize} bytes of audio, the file holds {available} "
                            f"({100 * available / csize:.0f}%)")
                return None
            pos += 8 + csize + (csize & 1)
    return "truncated: no audio data chunk before the end of the file"


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``; raises :class:`BadFile` with the reason."""
    import soundfile as sf
    from scipy.signal import resample_poly

    path = Path(path)
    if not path.is_file():
        raise BadFile("missing: no such file")
    if path.stat().st_size == 0:
        raise BadFile("empty: the file has 0 bytes")
    reason = wav_truncation(path)
    if reason:
        raise BadFile(reason)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; the message is what matters
        msg = str(exc).split(": ", 1)[-1] if str(exc) else type(exc).__name__
        raise BadFile(f"unreadable: {msg}") from None
    if audio.shape[0] == 0:
        raise BadFile("empty: no audio frames")
    if not np.isfinite(audio).all():
        raise BadFile("corrupt: non-finite samples")
    x = audio.mean(axis=1, dtype=np.float64)
    if sr != sample_rate:
        g = math.gcd(int(sr), int(sample_rate))
        x = resample_poly(x, sample_rate // g, int(sr) // g)
    return x.astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    ms = float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    return 10 * math.log10(ms) if ms > 0 else -math.inf


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")[:60] or "audio"


def segment_id(src: Source, k: int) -> str:
    digest = hashlib.sha1(src.shown.encode()).hexdigest()[:6]
    return f"{_slug(Path(src.shown).stem)}-{digest}-{k:04d}"


def auto_split(shown: str, valid_fraction: float) -> str:
    """Stable split from the source path, so every segment of a file lands in the same split."""
    h = int(hashlib.sha1(shown.encode()).hexdigest()[:8], 16) / 2**32
    return "valid" if h < valid_fraction else "train"


def process_source(src: Source, out_dir: str, sample_rate: int, segment_seconds: float, valid_fraction: float,
                   min_rms_db: float) -> dict[str, Any]:
    """Decode, cut and write one file. Returns {"rows": [...], "skipped": reason or None, ...}; never raises."""
    result: dict[str, Any] = {"row": src.row, "path": src.shown, "rows": [], "skipped": None, "silent_segments": 0}
    try:
        x = decode(src.path, sample_rate)
        seconds = len(x) / sample_rate
        seg = int(round(segment_seconds * sample_rate))
        if len(x) < seg:
            raise BadFile(f"too short: {seconds:.2f} s < {segment_seconds:g} s segment")
        level = rms_db(x)
        if level < min_rms_db:
            shown = "-inf" if level == -math.inf else f"{level:.1f}"
            raise BadFile(f"silent: RMS {shown} dBFS (threshold {min_rms_db:g} dBFS)")
        split = src.split or auto_split(src.shown, valid_fraction)
        result["auto_split"] = src.split is None
        for k in range(len(x) // seg):
            piece = x[k * seg:(k + 1) * seg]
            if rms_db(piece) < min_rms_db:
                result["silent_segments"] += 1
                continue
            sid = segment_id(src, k)
            rel = f"{AUDIO_DIR}/{sid}.wav"
            save_audio(Path(out_dir) / rel, piece, sample_rate)
            result["rows"].append({"id": sid, "path": rel, "caption": src.caption, "split": split,
                                   "seconds": round(seg / sample_rate, 6), "sample_rate": sample_rate,
                                   "labels": None})
        if not result["rows"]:
            raise BadFile(f"silent: all {result['silent_segments']} segments below {min_rms_db:g} dBFS")
    except BadFile as exc:
        result["rows"], result["skipped"] = [], str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the job
        result["rows"], result["skipped"] = [], f"error: {type(exc).__name__}: {exc}"
    return result


def _ensure_valid(results: list[dict[str, Any]], valid_fraction: float) -> None:
    """With a valid fraction > 0 and no valid file drawn (small corpora), move one auto-split file to valid.

    The file with the smallest path hash goes, so the choice is stable; at least one file stays in train.
    """
    usable = [r for r in results if r["rows"]]
    if valid_fraction <= 0 or len(usable) < 2 or any(row["split"] == "valid" for r in usable for row in r["rows"]):
        return
    auto = [r for r in usable if r.get("auto_split")]
    if not auto:
        return
    pick = min(auto, key=lambda r: hashlib.sha1(r["path"].encode()).hexdigest())
    for row in pick["rows"]:
        row["split"] = "valid"


def _process(args: tuple) -> dict[str, Any]:
    return process_source(*args)


def ingest(sources: list[Source], out_dir: str | Path, sample_rate: int = 32000, segment_seconds: float = 10.0,
           valid_fraction: float = 0.1, min_rms_db: float = -60.0, workers: int = 1,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the segments of every usable source, ``manifest.jsonl`` and ``report.json``; returns the report."""
    if segment_seconds <= 0:
        raise ValueError(f"segment_seconds must be > 0 (got {segment_seconds})")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1) (got {valid_fraction})")
    out_dir = Path(out_dir)
    (out_dir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(s, str(out_dir), sample_rate, segment_seconds, valid_fraction, min_rms_db) for s in sources]
    results: list[dict[str, Any]] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_process(job))
            if progress:
                progress(len(results), len(jobs))
    else:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for res in pool.imap(_process, jobs):
                results.append(res)
                if progress:
                    progress(len(results), len(jobs))
    _ensure_valid(results, valid_fraction)
    rows = [r for res in results for r in res["rows"]]
    report = {
        "out": str(out_dir), "sample_rate": sample_rate, "segment_seconds": segment_seconds,
        "files": len(results), "files_ok": sum(1 for r in results if not r["skipped"]),
        "files_skipped": sum(1 for r in results if r["skipped"]), "segments": len(rows),
        "silent_segments_dropped": sum(r["silent_segments"] for r in results),
        "splits": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "skipped": [{"row": r["row"], "path": r["path"], "reason": r["skipped"]} for r in results if r["skipped"]],
        "ok": [{"row": r["row"], "path": r["path"], "segments": len(r["rows"]),
                "silent_segments": r["silent_segments"]} for r in results if not r["skipped"]],
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    if rows:
        write_manifest(out_dir, rows)
    elif (out_dir / "manifest.jsonl").exists():
        (out_dir / "manifest.jsonl").unlink()  # a manifest from an earlier run would describe other audio
    return report


__all__ = ["IngestError", "BadFile", "Source", "read_sources", "folder_sources", "wav_truncation", "decode",
           "process_source", "ingest"]
