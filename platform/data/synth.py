"""``arfm data synth``: the offline default dataset, procedurally generated music with exact ground truth.

Clip ``i`` of a dataset with seed ``s`` depends only on ``(s, i)`` (three independent random streams for the
composition, the sound and the caption are spawned from ``SeedSequence([s, i])``), so clips render in any
order, in parallel, and the same seed gives byte-identical WAV files.

Example::

    from arfm.data.synth import generate_clip, synthesize_dataset
    clip = generate_clip(seed=0, index=3, seconds=10.0)      # audio float32[320000], labels, caption
    rows = synthesize_dataset("runs/data/synth", n=200, seconds=10.0, seed=0, workers=2)
"""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arfm.data.captions import make_caption
from arfm.data.manifest import AUDIO_DIR, save_audio, write_manifest
from arfm.data.synth_music import STYLES, Arrangement, compose, key_name
from arfm.data.synth_render import mix

SAMPLE_RATE = 32000
GENRES = tuple(STYLES)


@dataclass
class Clip:
    audio: np.ndarray  # float32[S], mono, peak <= -1 dBFS
    labels: dict[str, Any]
    caption: str
    arrangement: Arrangement
    stems: dict[str, np.ndarray] | None = None


def clip_id(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:05d}"


def labels_of(arr: Arrangement) -> dict[str, Any]:
    """The contract's label object for one clip."""
    instruments = [arr.instruments[r] for r in ("comp", "pad", "bass", "lead", "drums") if r in arr.instruments]
    return {
        "key": key_name(arr.key),
        "mode": arr.mode,
        "tempo": float(arr.tempo),
        "time_signature": [arr.beats_per_bar, 4],
        "genre": arr.genre,
        "instruments": instruments,
        "chords": [[lab, a, b] for lab, a, b in arr.chords],
        "melody": [[int(m), a, b] for m, a, b in arr.melody],
        "beats": list(arr.beats),
        "downbeats": list(arr.downbeats),
    }


def _check(seed: int, seconds: float, sample_rate: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    if not 0 < seconds <= 600:
        raise ValueError(f"seconds must be in (0, 600] (got {seconds})")
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate must be in [8000, 96000] (got {sample_rate})")


def generate_clip(seed: int, index: int, seconds: float, sample_rate: int = SAMPLE_RATE,
                  genre: str | None = None, return_stems: bool = False) -> Clip:
    """Compose, render and caption clip ``index`` of the dataset drawn with ``seed``."""
    _check(seed, seconds, sample_rate)
    compose_ss, render_ss, caption_ss = np.random.SeedSequence([seed, index]).spawn(3)
    arr = compose(np.random.default_rng(compose_ss), seconds, genre)
    rendered = mix(arr, sample_rate, np.random.default_rng(render_ss), return_stems=return_stems)
    audio, stems = rendered if return_stems else (rendered, None)
    caption = make_caption(arr, np.random.default_rng(caption_ss))
    return Clip(audio=audio, labels=labels_of(arr), caption=caption, arrangement=arr, stems=stems)


def n_valid(n: int, valid_fraction: float) -> int:
    """How many clips go to the valid split: round(n * fraction), at least 1 when the fraction is > 0 and n > 1."""
    if valid_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, int(round(n * valid_fraction))))


def _job(args: tuple) -> dict[str, Any]:
    out_dir, seed, index, seconds, sample_rate, split, genre = args
    clip = generate_clip(seed, index, seconds, sample_rate, genre)
    cid = clip_id(seed, index)
    rel = f"{AUDIO_DIR}/{cid}.wav"
    save_audio(Path(out_dir) / rel, clip.audio, sample_rate)
    return {"id": cid, "path": rel, "caption": clip.caption, "split": split,
            "seconds": round(len(clip.audio) / sample_rate, 6), "sample_rate": sample_rate, "labels": clip.labels}


def synthesize_dataset(out_dir: str | Path, n: int, seconds: float, seed: int = 0, workers: int = 2,
                       sample_rate: int = SAMPLE_RATE, valid_fraction: float = 0.1, genre: str | None = None,
                       progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Write ``n`` clips to ``out_dir/audio`` and ``out_dir/manifest.jsonl``; returns the manifest rows.

    The last :func:`n_valid` clips form the ``valid`` split. ``workers`` processes render in parallel
    (``spawn`` start method, so it is safe beside threads); the output does not depend on ``workers``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1) (got {valid_fraction})")
    if genre is not None and genre not in STYLES:
        raise ValueError(f"unknown genre {genre!r}; choose one of {', '.join(STYLES)}")
    _check(seed, seconds, sample_rate)
    out_dir = Path(out_dir)
    (out_dir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    first_valid = n - n_valid(n, valid_fraction)
    jobs = [(str(out_dir), seed, i, seconds, sample_rate, "valid" if i >= first_valid else "train", genre)
            for i in range(n)]
    rows: list[dict[str, Any]] = []
    workers = min(workers, n)
    if workers == 1:
        for job in jobs:
            rows.append(_job(job))
            if progress:
                progress(len(rows), n)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for row in pool.imap(_job, jobs, chunksize=max(1, min(4, math.ceil(n / (8 * workers))))):
                rows.append(row)
                if progress:
                    progress(len(rows), n)
    write_manifest(out_dir, rows)
    return rows
