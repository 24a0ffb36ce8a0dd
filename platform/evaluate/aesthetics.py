"""Audiobox Aesthetics scores PQ, PC, CE (and CU) (section 4.3; Tjandra et al., 2025).

The ``audiobox-aesthetics`` predictor (a WavLM encoder with one regression head per axis) rates each clip on
four 1-10 axes: Production Quality (PQ), Production Complexity (PC), Content Enjoyment (CE) and Content
Usefulness (CU, not in the paper's tables). Audio is resampled to 16 kHz by the predictor, scored on 10 s
windows and averaged with window-length weights; the dataset value of each axis is the mean over clips.

Runs only when ``eval.aesthetics_checkpoint`` (a local ``checkpoint.pt``) is given and the package is
installed (``pip install audiobox-aesthetics``; not part of the pinned stack). Otherwise every axis comes
back skipped with the reason — never a made-up number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from arfm.evaluate.audio import as_mono
from arfm.evaluate.results import MetricResult

AXES = ("pq", "pc", "ce", "cu")
METHOD = "audiobox-aesthetics"


class AestheticsUnavailable(RuntimeError):
    pass


def _skip_all(reason: str) -> dict[str, MetricResult]:
    return {ax: MetricResult.skip(ax, reason, METHOD) for ax in AXES}


def load_predictor(checkpoint: str):
    """The package's predictor for a local checkpoint (both its older and newer entry points)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise AestheticsUnavailable(f"aesthetics checkpoint {checkpoint!r} is not a file")
    try:
        import audiobox_aesthetics.infer as infer
    except Exception as exc:  # noqa: BLE001
        raise AestheticsUnavailable(
            f"the audiobox-aesthetics package is not importable ({type(exc).__name__}: {exc}); "
            "install it with `pip install audiobox-aesthetics`") from exc
    try:
        if hasattr(infer, "initialize_predictor"):
            return infer.initialize_predictor(ckpt=str(path))
        predictor = infer.AesWavlmPredictorMultiOutput(checkpoint_pth=str(path))
        predictor.setup_model()
        return predictor
    except Exception as exc:  # noqa: BLE001
        raise AestheticsUnavailable(f"audiobox-aesthetics could not load {path} ({type(exc).__name__}: {exc})") from exc


def score_with(predictor: Any, audios: Sequence[Any], sample_rate: int, batch_size: int = 8) -> list[dict[str, float]]:
    """Per-clip ``{"pq", "pc", "ce", "cu"}`` from a predictor whose ``forward`` takes
    ``[{"path": tensor[1, S], "sample_rate": sr}]`` and returns dicts (or JSON strings) keyed CE/CU/PC/PQ."""
    import torch

    rows: list[dict[str, float]] = []
    for i in range(0, len(audios), batch_size):
        batch = [{"path": torch.from_numpy(as_mono(a))[None], "sample_rate": int(sample_rate)}
                 for a in audios[i:i + batch_size]]
        for r in predictor.forward(batch):
            r = json.loads(r) if isinstance(r, str) else r
            rows.append({ax: float(r[ax.upper()]) for ax in AXES if ax.upper() in r})
    return rows


def aesthetics_scores(audios: Sequence[Any], sample_rate: int, checkpoint: str | None,
                      predictor: Any = None) -> dict[str, MetricResult]:
    """``{"pq", "pc", "ce", "cu"} -> MetricResult`` (mean over clips), or all skipped with the reason."""
    if predictor is None:
        if not checkpoint:
            return _skip_all("no Audiobox Aesthetics checkpoint given: set eval.aesthetics_checkpoint to its "
                             "checkpoint.pt (and pip install audiobox-aesthetics)")
        try:
            predictor = load_predictor(checkpoint)
        except AestheticsUnavailable as exc:
            return _skip_all(str(exc))
    rows = score_with(predictor, audios, sample_rate)
    return {ax: MetricResult.from_samples(ax, [r.get(ax) for r in rows], METHOD) for ax in AXES}
