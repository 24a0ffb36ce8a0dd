"""Confidence intervals used by every report row: values by hand, the printed form, and set bootstraps."""

import math

import numpy as np
import pytest

from arfm.evaluate.stats import Summary, curve_ci, describe, mean_ci, set_bootstrap


def test_t_interval_matches_hand_computation():
    # values 1..5: mean 3, s = sqrt(2.5), t_{0.975, 4} = 2.7764451
    s = mean_ci([1, 2, 3, 4, 5, None, float("nan")])
    assert s.n == 5 and s.mean == pytest.approx(3.0)
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert s.lo == pytest.approx(3 - half, rel=1e-6) and s.hi == pytest.approx(3 + half, rel=1e-6)
    assert s.symmetric and s.format(2) == f"3.00 ± {half:.2f} (n=5)"
    assert mean_ci([1, 2, 3, 4, 5], level=0.5).hi < s.hi  # the level is used


def test_degenerate_inputs():
    assert mean_ci([]).mean is None and mean_ci([]).format() == "—"
    one = mean_ci([0.4])
    assert one.mean == 0.4 and one.lo is None and one.format() == "0.40 (n=1)"
    same = mean_ci([0.5, 0.5, 0.5])
    assert (same.lo, same.hi) == (0.5, 0.5)
    with pytest.raises(ValueError):
        mean_ci([1, 2], method="z")


def test_asymmetric_intervals_print_as_bounds_never_as_plus_minus():
    s = Summary(4.73, 5.24, 9.13, 8, method="set")
    assert not s.symmetric and s.half_width is None
    assert s.format(2) == "4.73 [5.24, 9.13] (n=8)" and s.interval_text(2) == "[5.24, 9.13]"
    assert "±" not in s.format(2)


def test_bootstrap_of_the_mean_is_reproducible_and_close_to_t():
    x = np.random.default_rng(0).normal(2.0, 1.0, 200)
    a, b = mean_ci(x, method="bootstrap"), mean_ci(x, method="bootstrap")
    assert a == b and a.lo < a.mean < a.hi
    t = mean_ci(x)
    assert (a.hi - a.lo) == pytest.approx(t.hi - t.lo, rel=0.25)  # both ~ 2 * 1.96 s / sqrt(n)


def test_set_bootstrap_resamples_both_sets_independently():
    seen_a, seen_b = set(), set()

    def statistic(a, b):
        seen_a.add(tuple(sorted(a)))
        seen_b.add(tuple(sorted(b)))
        return float(np.mean(a) - np.mean(b))

    a, b = list(np.arange(10.0)), list(np.arange(6.0) + 100)
    lo, hi = set_bootstrap(a, b, statistic, n_resamples=200)
    assert len(seen_a) > 50 and len(seen_b) > 50  # not one set held fixed
    assert lo < np.mean(a) - np.mean(b) < hi
    assert set_bootstrap(a[:1], b, statistic) is None
    assert set_bootstrap(a, b, lambda x, y: -5.0 + 0.01 * len(set(x)), lower_bound=0.0, n_resamples=50) == (0.0, 0.0)


def test_descriptions_name_the_method():
    assert "t interval" in describe("t") and "BCa" in describe("bootstrap")
    assert "both sets resampled" in describe("basic bootstrap, both sets resampled", n_resamples=1000)


def test_curve_ci_ragged_rows():
    mean, lo, hi, n = curve_ci([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert list(n) == [2, 2, 1]
    assert mean.tolist() == [2.0, 3.0, 3.0]
    assert lo[2] == hi[2] == 3.0
    half = 12.7062047 * math.sqrt(2.0) / math.sqrt(2)  # t_{0.975, 1} * s / sqrt(n), s = sqrt(2)
    assert lo[0] == pytest.approx(2.0 - half, rel=1e-6) and hi[1] == pytest.approx(3.0 + half, rel=1e-6)
