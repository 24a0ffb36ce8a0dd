"""The one result type every metric returns, and the names metrics are logged under.

:class:`MetricResult` carries the aggregate ``value``, the ``per_sample`` values it came from (``None`` for a
sample that could not be scored), the ``method`` that produced it (named in every table: e.g. ``"mel-offline"``
for the offline FAD embedding, ``"chordino"`` or ``"chroma-template"`` for chords) and, when the metric could
not run at all, ``skipped`` with the reason (never a made-up number: ``value`` is then ``None``).

MLflow metric keys: ``eval/<name>`` for the default sampling setting and ``eval/<variant>/<name>`` for a
variant (``euler<N>`` for fixed-step Euler sampling, ``single_chords|single_melody|single_drums`` for one
control given and the others null, ``inpaint_zs`` for zero-shot FM inpainting); see :func:`metric_key`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

# name -> (table label, higher is better, digits shown)
METRICS: dict[str, tuple[str, bool, int]] = {
    "fad": ("FAD↓", False, 3),
    "fad2": ("FAD₂↓", False, 3),
    "clap": ("CLAP↑", True, 3),
    "pq": ("PQ↑", True, 2),
    "pc": ("PC↑", True, 2),
    "ce": ("CE↑", True, 2),
    "cu": ("CU↑", True, 2),
    "chord_iou": ("Chords IOU↑", True, 3),
    "beat_f1": ("Beat F1↑", True, 3),
    "melody_sim": ("Melody Sim.↑", True, 3),
    "si_snr": ("SI-SNR↑", True, 3),
    "visqol": ("ViSQOL↑", True, 3),
    "log_msd": ("log-MSD↓", False, 3),
    "entropy": ("Entropy", False, 3),
}

VARIANT_PREFIXES = ("euler", "single_", "inpaint_", "dopri5", "midpoint", "heun")


def metric_key(name: str, variant: str | None = None) -> str:
    """``metric_key("fad") == "eval/fad"``; ``metric_key("fad", "euler10") == "eval/euler10/fad"``."""
    if not name or "/" in name:
        raise ValueError(f"metric name must be a plain word, got {name!r}")
    return f"eval/{variant}/{name}" if variant else f"eval/{name}"


def parse_metric_key(key: str) -> tuple[str | None, str] | None:
    """``"eval/euler10/fad" -> ("euler10", "fad")``, ``"eval/fad" -> (None, "fad")``, other keys -> None."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == "eval":
        return None, parts[1]
    if len(parts) == 3 and parts[0] == "eval":
        return parts[1], parts[2]
    return None


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass
class MetricResult:
    """One metric over one evaluated set."""

    name: str
    value: float | None
    method: str
    per_sample: list[float | None] | None = None
    skipped: str | None = None
    ci: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.value is not None

    @property
    def n(self) -> int:
        if self.per_sample is not None:
            return sum(v is not None for v in self.per_sample)
        return int(self.extra.get("n", 0))

    @classmethod
    def skip(cls, name: str, reason: str, method: str = "") -> "MetricResult":
        return cls(name=name, value=None, method=method, skipped=reason)

    @classmethod
    def from_samples(cls, name: str, values: Sequence[float | None], method: str, **extra: Any) -> "MetricResult":
        """Mean of the per-sample values (``None`` ignored) with a 95% t interval (``extra["ci_method"]``)."""
        from arfm.evaluate.stats import T_INTERVAL, describe, mean_ci

        vals = [_finite(v) for v in values]
        s = mean_ci(vals)
        ci = (s.lo, s.hi) if s.lo is not None else None
        return cls(name=name, value=s.mean, method=method, per_sample=vals, ci=ci,
                   extra={"ci_method": describe(T_INTERVAL), **extra})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "method": self.method, "n": self.n,
                "ci": list(self.ci) if self.ci else None, "skipped": self.skipped,
                "per_sample": self.per_sample, "extra": self.extra}

    def __repr__(self) -> str:  # short: per-sample lists can be long
        if self.skipped:
            return f"MetricResult({self.name}: skipped: {self.skipped})"
        return f"MetricResult({self.name}={self.value!r} by {self.method}, n={self.n}, ci={self.ci})"
