"""``eval/per_sample.json``: every evaluated value of one model run, written by the evaluation job and read by
the report (which computes each table cell's n and 95% interval from it).

Format (schema_version 1)::

    {
      "schema_version": 1,
      "n": 64,                                   # evaluated samples (prompts)
      "ids": ["synth-0-00012", ...],             # n prompt/clip ids (may be empty)
      "captions": ["...", ...],                  # n captions (may be empty)
      "per_sample": {                            # metric key -> n values (null: sample not scored)
        "chord_iou": [0.61, null, ...],          #   key = the MLflow key without "eval/":
        "euler10/clap": [...],                   #   "<name>" or "<variant>/<name>"
      },
      "set": {                                   # set-level metrics (FAD): value, 95% CI, n, embedding model
        "fad": {"value": 1.23, "ci": [0.81, 1.40], "n": 64, "model": "mel-offline",
                "ci_method": "95% basic bootstrap over clips, both sets resampled (...)"},
        "euler10/fad": {...}
      },
      "methods": {"fad": "mel-offline", "chord_iou": "chordino vs labels, tetrads", ...},  # estimator, reference
      "intervals": {"chord_iou": "95% t interval of the mean (scipy ttest_1samp)", ...},  # how each CI was made
      "fallbacks": {"chord_iou": "chroma-template used because Chordino ... unavailable: ..."},  # when one was
      "skipped": {"clap": "no CLAP checkpoint given ...", ...},          # key -> why it was not computed
      "entropy": {"": [[H_0, H_1, ...], ...], "single_chords": [...]},   # variant -> per-prompt per-step
                                                                          #   first-codebook entropies (nats)
      "notes": ["8 samples asked, but ... holds 5 clips: evaluated n = 5 ..."]  # what the reader must know
    }

Variants: ``euler<N>`` (FM, fixed-step Euler), ``single_chords|single_melody|single_drums`` (one control
given, the others null), ``inpaint_zs`` (zero-shot FM inpainting); no variant = the run's default sampling.
:class:`PerSample` builds the file from :class:`~arfm.evaluate.results.MetricResult` objects and gives the
aggregate values to log as MLflow metrics (``eval/<key>``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from arfm.evaluate.results import MetricResult

SCHEMA_VERSION = 1
ARTIFACT_PATH = "eval/per_sample.json"
MAX_TAG_VALUE = 5000  # MLflow's limit on a tag value is 8000 characters


def _key(name: str, variant: str | None) -> str:
    return f"{variant}/{name}" if variant else name


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


class PerSample:
    """Collects the results of one evaluation; ``write(path)`` saves the JSON described above."""

    def __init__(self, ids: Sequence[str] = (), captions: Sequence[str] = (), n: int | None = None):
        self.ids = [str(i) for i in ids]
        self.captions = [str(c) for c in captions]
        self.n = int(n if n is not None else len(self.ids))
        self.per_sample: dict[str, list[float | None]] = {}
        self.set: dict[str, dict[str, Any]] = {}
        self.methods: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.intervals: dict[str, str] = {}
        self.fallbacks: dict[str, str] = {}
        self.entropy: dict[str, list[list[float]]] = {}
        self.notes: list[str] = []  # e.g. "8 samples asked, but the valid split holds 5 clips: n = 5"

    def add(self, result: MetricResult, variant: str | None = None) -> None:
        key = _key(result.name, variant)
        if result.method:
            self.methods[key] = result.method
        if result.extra.get("fallback"):
            self.fallbacks[key] = str(result.extra["fallback"])
        if result.skipped:
            self.skipped[key] = result.skipped
            return
        if result.extra.get("ci_method"):
            self.intervals[key] = str(result.extra["ci_method"])
        if result.per_sample is not None:
            self.per_sample[key] = [_num(v) for v in result.per_sample]
        else:
            entry = {"value": _num(result.value), "ci": list(result.ci) if result.ci else None, "n": result.n}
            for k in ("model", "ci_method"):
                if k in result.extra:
                    entry[k] = result.extra[k]
            self.set[key] = entry

    def add_all(self, results: dict[str, MetricResult] | Sequence[MetricResult], variant: str | None = None) -> None:
        for r in (results.values() if isinstance(results, dict) else results):
            self.add(r, variant)

    def add_entropy(self, per_prompt: Sequence[Sequence[float]], variant: str | None = None) -> None:
        self.entropy[variant or ""] = [[float(v) for v in row] for row in per_prompt]

    def metrics(self) -> dict[str, float]:
        """Aggregates to log: ``{"eval/<key>": value}`` (means of per-sample values, set values as they are)."""
        out: dict[str, float] = {}
        for key, vals in self.per_sample.items():
            xs = [v for v in vals if v is not None]
            if xs:
                out[f"eval/{key}"] = sum(xs) / len(xs)
        for key, entry in self.set.items():
            if entry.get("value") is not None:
                out[f"eval/{key}"] = float(entry["value"])
        return out

    def tags(self) -> dict[str, str]:
        """One MLflow tag per metric saying how it was computed: ``{"eval/<key>.method": "chordino vs labels,
        tetrads; 95% t interval of the mean (scipy ttest_1samp)"}`` (and the fallback or skip reason)."""
        out: dict[str, str] = {}
        for key in sorted(set(self.methods) | set(self.skipped)):
            parts = [self.methods.get(key) or "method not recorded"]
            if key in self.skipped:
                parts.append(f"skipped: {self.skipped[key]}")
            elif key in self.intervals:
                parts.append(self.intervals[key])
            if key in self.fallbacks:
                parts.append(self.fallbacks[key])
            out[f"eval/{key}.method"] = "; ".join(parts)[:MAX_TAG_VALUE]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "n": self.n, "ids": self.ids, "captions": self.captions,
                "per_sample": self.per_sample, "set": self.set, "methods": self.methods,
                "intervals": self.intervals, "fallbacks": self.fallbacks, "skipped": self.skipped,
                "entropy": self.entropy, "notes": self.notes}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), allow_nan=False))
        return path


def from_variant_rows(doc: dict[str, Any]) -> dict[str, Any]:
    """Convert the layout ``{"n", "variants": {variant: {metric: MetricResult.to_dict()}}, "prompts": [...]}``
    (rows as the evaluation job's Ray tasks return them) to schema 1."""
    ps = PerSample(ids=[p.get("id", "") for p in doc.get("prompts", [])],
                   captions=[p.get("caption", "") for p in doc.get("prompts", [])], n=doc.get("n"))
    for variant, rows in (doc.get("variants") or {}).items():
        for name, row in rows.items():
            ci = row.get("ci")
            ps.add(MetricResult(name=row.get("name", name), value=row.get("value"), method=row.get("method", ""),
                                per_sample=row.get("per_sample"), skipped=row.get("skipped"),
                                ci=tuple(ci) if ci else None, extra=dict(row.get("extra") or {})), variant or None)
    return ps.to_dict()


def read_per_sample(path: str | Path) -> dict[str, Any]:
    """Load and check a ``per_sample.json`` (schema 1, or the per-variant row layout, converted); missing
    sections come back empty."""
    doc = json.loads(Path(path).read_text())
    if isinstance(doc, dict) and "schema_version" not in doc and isinstance(doc.get("variants"), dict):
        doc = from_variant_rows(doc)
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: not a per_sample.json of schema_version {SCHEMA_VERSION}")
    for k in ("per_sample", "set", "methods", "intervals", "fallbacks", "skipped", "entropy"):
        doc.setdefault(k, {})
    doc.setdefault("ids", [])
    doc.setdefault("notes", [])
    doc.setdefault("captions", [])
    return doc
