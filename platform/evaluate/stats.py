"""Summary statistics for the report: a value, its 95% confidence interval, the number of samples, and the
name of the interval's method. All intervals come from ``scipy.stats``.

``mean_ci(values)`` drops ``None`` and NaN, then returns a :class:`Summary` of the mean:

- ``method="t"`` (default): the Student-t interval of a mean of independent samples,
  ``scipy.stats.ttest_1samp(x, 0).confidence_interval(level)`` (``mean ± t_{(1+level)/2, n-1} s / sqrt(n)``);
- ``method="bootstrap"``: ``scipy.stats.bootstrap`` of the mean (BCa, 2000 resamples, fixed seed).

``set_bootstrap(a, b, statistic)`` is the interval of a statistic of *two sets* (FAD): both sets are resampled
independently, with replacement, and the interval is the *basic* (reverse-percentile) bootstrap interval
``[2 θ̂ - q_hi, 2 θ̂ - q_lo]`` of ``scipy.stats.bootstrap(..., paired=False, method="basic")``. The plug-in FAD
is biased upward at small n (a resampled set repeats clips and its statistics drift from the other set's),
so the percentile interval of the resampled values lies above the estimate; the basic interval reflects that
bias back and keeps its 95% coverage on Gaussian embeddings with a known Fréchet distance, where the percentile
interval (of one or of both sets) and BCa covered the true value in 0-15% of the trials (the coverage test is
in ``tests/evaluate/test_fad.py``). It is cut at the statistic's lower bound (0 for FAD), need not contain
the point estimate, and is not symmetric: it prints as ``[lo, hi]``. At n = 8 clips it is wide, as FAD's
uncertainty at that size is.

With one value the interval is undefined (``lo = hi = None``); with none the value is ``None`` too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

T_INTERVAL = "t"
MEAN_BOOTSTRAP = "bootstrap"
SET_BOOTSTRAP = "basic bootstrap, both sets resampled"


@dataclass(frozen=True)
class Summary:
    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    std: float | None = None
    method: str = T_INTERVAL
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        """Half the interval's width when the interval is symmetric about the value, else ``None``."""
        if not self.symmetric:
            return None
        return (self.hi - self.lo) / 2.0

    @property
    def symmetric(self) -> bool:
        if self.lo is None or self.hi is None or self.mean is None:
            return False
        return math.isclose(self.hi - self.mean, self.mean - self.lo, rel_tol=1e-9, abs_tol=1e-12)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def interval_text(self, digits: int = 2) -> str:
        """``"± 0.03"`` for a symmetric interval, ``"[0.80, 1.10]"`` otherwise, ``""`` without one."""
        if self.lo is None or self.hi is None:
            return ""
        if self.symmetric:
            return f"± {(self.hi - self.lo) / 2.0:.{digits}f}"
        return f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def format(self, digits: int = 2) -> str:
        """``"0.47 ± 0.03 (n=64)"``; ``"1.23 [0.80, 1.10] (n=64)"`` for an asymmetric interval; ``"0.47 (n=1)"``
        without an interval; ``"—"`` without values."""
        if self.mean is None:
            return "—"
        ci = self.interval_text(digits)
        return f"{self.mean:.{digits}f}" + (f" {ci}" if ci else "") + f" (n={self.n})"


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


def describe(method: str, level: float = 0.95, n_resamples: int | None = None) -> str:
    """How an interval was computed, in words, for report notes and MLflow tags."""
    pct = f"{100 * level:g}%"
    if method == T_INTERVAL:
        return f"{pct} t interval of the mean (scipy ttest_1samp)"
    if method == MEAN_BOOTSTRAP:
        return f"{pct} BCa bootstrap of the mean (scipy bootstrap, {n_resamples or 2000} resamples)"
    if method == SET_BOOTSTRAP:
        extra = f", {n_resamples} resamples" if n_resamples else ""
        return f"{pct} basic bootstrap over clips, both sets resampled (scipy bootstrap{extra})"
    return f"{pct} {method}"


def mean_ci(values: Iterable[Any], level: float = 0.95, method: str = T_INTERVAL, n_boot: int = 2000,
            seed: int = 0) -> Summary:
    """Mean of the finite values with a ``level`` confidence interval (``"t"`` or ``"bootstrap"``)."""
    from scipy import stats

    if method not in (T_INTERVAL, MEAN_BOOTSTRAP):
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
    if std == 0.0:  # every value equal: the interval is the value itself (scipy would return NaN)
        return Summary(mean, mean, mean, n, std, method, level)
    if method == T_INTERVAL:
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=level)
    else:
        ci = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_boot, method="BCa",
                             random_state=np.random.default_rng(seed)).confidence_interval
    return Summary(mean, float(ci.low), float(ci.high), n, std, method, level)


def set_bootstrap(a: Sequence[Any], b: Sequence[Any], statistic: Callable[[list[Any], list[Any]], float],
                  level: float = 0.95, n_resamples: int = 1000, seed: int = 0,
                  lower_bound: float | None = None) -> tuple[float, float] | None:
    """Basic bootstrap interval of ``statistic(a, b)`` resampling the items of both sets (see the module doc).

    ``lower_bound``: the smallest value the statistic can take (0 for a distance); the interval is cut there,
    which keeps its coverage. Returns ``None`` when either set has fewer than two items or the resampled
    statistics are not finite.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or n_resamples < 2:
        return None

    def stat(ia: np.ndarray, ib: np.ndarray) -> float:
        return float(statistic([a[int(i)] for i in ia], [b[int(i)] for i in ib]))

    res = stats.bootstrap((np.arange(len(a)), np.arange(len(b))), stat, paired=False, vectorized=False,
                          n_resamples=n_resamples, confidence_level=level, method="basic",
                          random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lower_bound is not None:
        lo, hi = max(lo, lower_bound), max(hi, lower_bound)
    return lo, hi


def curve_ci(rows: Sequence[Sequence[float]], level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """Per-position mean and t interval of ragged rows (shorter rows count only where they have values).

    Returns ``(mean[L], lo[L], hi[L], n[L])`` with ``L`` the longest row; positions with one value (or no
    spread) get ``lo = hi = mean``.
    """
    from scipy import stats

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
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # columns with one value: scipy divides by zero
            mean = np.nanmean(m, axis=0)  # every position has a value: L is the longest row
            ci = stats.ttest_1samp(m, 0.0, axis=0, nan_policy="omit").confidence_interval(confidence_level=level)
    lo, hi = np.asarray(ci.low, dtype=np.float64), np.asarray(ci.high, dtype=np.float64)
    flat = ~(np.isfinite(lo) & np.isfinite(hi))
    lo, hi = np.where(flat, mean, lo), np.where(flat, mean, hi)
    return mean, lo, hi, n.astype(int)
