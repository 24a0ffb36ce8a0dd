"""What an evaluation generates from and compares against: its prompts and FAD's set of real clips.

:func:`load_prompts` gives the distinct prompts (caption, reference audio, exact labels) of the held-out split;
:func:`load_background` gives FAD's real set when ``eval.fad_reference=train``: clips of the training split,
never one of the prompts, so that FAD compares generated music with real music the model did not get as a
prompt, and the reference clips themselves score the real-vs-real FAD at the same n (the metric's own floor).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from arfm.config import JobConfig

def load_prompts(cfg: JobConfig, n: int, seconds: float, sample_rate: int,
                 notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Up to ``n`` distinct prompts: ``{"caption", "reference" (audio or None), "labels" (or None), "id"}``.

    ``cfg.eval.prompts`` is ``valid`` (the dataset's held-out split), a ``.txt`` file (one caption per line, no
    references) or a dataset ``manifest.jsonl``. Every prompt is a different clip (or caption): evaluated
    samples must be independent for their intervals to hold, and FAD's reference set must not repeat clips.
    When the pool holds fewer than ``n`` the pool's size is used, and a sentence saying so is appended to
    ``notes`` (and logged).
    """
    from arfm.data.manifest import load_audio, read_manifest

    src = cfg.eval.prompts
    if src.endswith(".txt"):
        lines = [c.strip() for c in Path(src).read_text().splitlines() if c.strip()]
        captions = list(dict.fromkeys(lines))  # distinct, in file order
        if not captions:
            raise ValueError(f"eval.prompts: {src} holds no captions")
        _note_pool(notes, n, len(captions), f"{src} holds {len(captions)} distinct captions")
        return [{"id": f"prompt{i}", "caption": c, "reference": None, "labels": None}
                for i, c in enumerate(captions[:n])]
    root = Path(src).parent if src.endswith(".jsonl") else Path(cfg.data.dataset)
    rows = read_manifest(root)
    valid = [r for r in rows if r.get("split") == "valid"]
    pool = list({r["id"]: r for r in (valid or rows)}.values())  # one prompt per clip
    if not pool:
        raise ValueError(f"eval.prompts: no rows in {root}/manifest.jsonl")
    where = f"the {'valid split' if valid else 'manifest (it has no valid split)'} of {root}"
    _note_pool(notes, n, len(pool), f"{where} holds {len(pool)} clips")
    n_samples = int(round(seconds * sample_rate))
    prompts = []
    for row in pool[:n]:
        audio = load_audio(root, row)[:n_samples]
        if len(audio) < n_samples:
            audio = np.pad(audio, (0, n_samples - len(audio)))
        prompts.append({"id": row["id"], "caption": row["caption"], "reference": audio.astype(np.float32),
                        "labels": crop_labels(row.get("labels"), seconds)})
    return prompts


def _note_pool(notes: list[str] | None, n: int, size: int, where: str) -> None:
    if size >= n:
        return
    text = f"{n} samples asked, but {where}: evaluated n = {size} (prompts are not repeated)"
    logging.getLogger(__name__).warning(text)
    if notes is not None:
        notes.append(text)


def crop_labels(labels: dict[str, Any] | None, seconds: float) -> dict[str, Any] | None:
    if not labels:
        return None
    out = dict(labels)
    out["chords"] = [[lab, s, min(e, seconds)] for lab, s, e in labels.get("chords", []) if s < seconds]
    out["melody"] = [[m, s, min(e, seconds)] for m, s, e in labels.get("melody", []) if s < seconds]
    out["downbeats"] = [t for t in labels.get("downbeats", []) if t < seconds]
    out["beats"] = [t for t in labels.get("beats", []) if t < seconds]
    return out


def load_background(cfg: JobConfig, seconds: float, sample_rate: int, exclude: set[str],
                    notes: list[str] | None = None) -> list[np.ndarray] | None:
    """FAD's real set: the first ``eval.fad_reference_clips`` clips of the dataset's train split (by id) that
    are not prompts, cropped like the prompts; ``None`` when ``eval.fad_reference=prompts`` or the dataset has
    no such clips (then FAD compares with the prompts' own references, and a note says so)."""
    from arfm.data.manifest import load_audio, read_manifest

    if cfg.eval.fad_reference != "train":
        return None
    root = Path(cfg.data.dataset)
    try:
        rows = read_manifest(root)
    except Exception:  # noqa: BLE001 - no dataset next to the model: fall back, and say so
        rows = []
    pool = sorted((r for r in rows if r.get("split") == "train" and r["id"] not in exclude), key=lambda r: r["id"])
    k = cfg.eval.fad_reference_clips
    if len(pool) < 2:
        if notes is not None:
            notes.append(f"eval.fad_reference=train, but {root} has no train clips apart from the prompts: FAD "
                         "compares with the prompts' own reference clips")
        return None
    n_samples = int(round(seconds * sample_rate))
    out = []
    for row in pool[:k]:
        audio = load_audio(root, row)[:n_samples]
        out.append(np.pad(audio, (0, n_samples - len(audio))).astype(np.float32) if len(audio) < n_samples
                   else audio.astype(np.float32))
    if len(out) < k and notes is not None:
        notes.append(f"FAD's real set holds {len(out)} train clips ({k} asked)")
    return out
