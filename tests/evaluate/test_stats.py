"""Confidence intervals used by every report row."""

import math

import numpy as np
import pytest

from arfm.evaluate.stats import bootstrap_ci, curve_ci, mean_ci


def test_t_interval_matches_hand_computation():
    # values 1..5: mean 3, s = sqrt(2.5), t_{0.975, 4} = 2.7764451
    s = mean_ci([1, 2, 3, 4, 5, None, float("nan")])
    assert s.n == 5 and s.mean == pytest.approx(3.0)
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert s.lo == pytest.approx(3 - half, rel=1e-6) and s.hi == pytest.approx(3 + half, rel=1e-6)
    assert s.format(2) == f"3.00 ± {half:.2f} (n=5)"


def test_degenerate_inputs():
    assert mean_ci([]).mean is None and mean_ci([]).format() == "—"
    one = mean_ci([0.4])
    assert one.mean == 0.4 and one.lo is None and one.format() == "0.40 (n=1)"
    with pytest.raises(ValueError):
        mean_ci([1, 2], method="z")


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    x = np.random.default_rng(0).normal(2.0, 1.0, 200)
    a, b = mean_ci(x, method="bootstrap"), mean_ci(x, method="bootstrap")
    assert a == b and a.lo < a.mean < a.hi
    t = mean_ci(x)
    assert a.half_width == pytest.approx(t.half_width, rel=0.25)  # both ~ 1.96 s / sqrt(n)
    lo, hi = bootstrap_ci(list(x), lambda v: float(np.median(v)), n_boot=100)
    assert lo < np.median(x) < hi


def test_curve_ci_ragged_rows():
    mean, lo, hi, n = curve_ci([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert list(n) == [2, 2, 1]
    assert mean.tolist() == [2.0, 3.0, 3.0]
    assert lo[2] == hi[2] == 3.0 and lo[0] < 2.0 < hi[0]
