"""Summary statistics for the report: a mean with its 95% confidence interval and the number of values.

``mean_ci(values)`` drops ``None`` and NaN, then returns a :class:`Summary`:

- ``method="t"`` (default): Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` with ``s`` the
  sample standard deviation (ddof=1); the textbook interval for a mean of independent samples.
- ``method="bootstrap"``: percentile bootstrap (Efron & Tibshirani, 1993) over ``n_boot`` resamples with
  replacement, with a fixed seed so reports are reproducible.

With one value the interval is undefined (``lo = hi = None``); with none the mean is ``None`` too.
``bootstrap_ci(items, statistic)`` gives the same percentile interval for any statistic of a list of items
(used for FAD, a set-level score, by resampling the evaluated clips).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Summary:
    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    std: float | None = None
    method: str = "t"
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self, digits: int = 2) -> str:
        """``"0.47 ± 0.03 (n=64)"``; ``"0.47 (n=1)"`` without an interval; ``"—"`` without values."""
        if self.mean is None:
            return "—"
        text = f"{self.mean:.{digits}f}"
        hw = self.half_width
        if hw is not None:
            text += f" ± {hw:.{digits}f}"
        return text + f" (n={self.n})"


def clean(values: Iterable[Any]) -> np.ndarray:
    """Finite floats only (``None``, NaN and ±inf dropped)."""
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def t_quantile(p: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, dof))


def mean_ci(values: Iterable[Any], level: float = 0.95, method: str = "t", n_boot: int = 2000,
            seed: int = 0) -> Summary:
    """Mean of the finite values with a ``level`` confidence interval (``"t"`` or ``"bootstrap"``)."""
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = clean(values)
    n = int(x.size)
    if n == 0:
        return Summary(None, None, None, 0, None, method, level)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, None, None, 1, None, method, level)
    std = float(x.std(ddof=1))
    if method == "t":
        half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
        return Summary(mean, mean - half, mean + half, n, std, method, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = x[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Summary(mean, float(lo), float(hi), n, std, method, level)


def bootstrap_ci(items: Sequence[Any], statistic: Callable[[list[Any]], float], level: float = 0.95,
                 n_boot: int = 200, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over resamples (with replacement) of ``items``."""
    n = len(items)
    if n < 2 or n_boot < 2:
        return None
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        v = statistic([items[i] for i in pick])
        if v is not None and math.isfinite(v):
            vals.append(v)
    if len(vals) < 2:
        return None
    lo, hi = np.quantile(np.asarray(vals), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def curve_ci(rows: Sequence[Sequence[float]], level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """Per-position mean and t interval of ragged rows (shorter rows count only where they have values).

    Returns ``(mean[L], lo[L], hi[L], n[L])`` with ``L`` the longest row; positions with one value get
    ``lo = hi = mean``.
    """
    if len(rows) == 0:
        z = np.zeros(0)
        return z, z, z, z.astype(int)
    length = max(len(r) for r in rows)
    m = np.full((len(rows), length), np.nan)
    for i, r in enumerate(rows):
        m[i, : len(r)] = np.asarray(r, dtype=np.float64)
    m[~np.isfinite(m)] = np.nan
    n = np.sum(np.isfinite(m), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _nanmean(m, n)
        std = np.sqrt(np.nansum((m - mean[None]) ** 2, axis=0) / np.maximum(n - 1, 1))
        from scipy import stats

        tq = np.where(n > 1, stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)), 0.0)
        half = np.where(n > 1, tq * std / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, mean - half, mean + half, n.astype(int)


def _nanmean(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    s = np.nansum(m, axis=0)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)
