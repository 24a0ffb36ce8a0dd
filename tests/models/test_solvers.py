import math

import pytest
import torch

from arfm.models.solvers import integrate, time_grid

LAM = -1.3  # linear field v(x, t) = LAM * x: exact solution x0 * exp(LAM * t)


def field(x, t):
    return LAM * x


X0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_euler_matches_closed_form(steps):
    x, info = integrate(field, X0, "euler", steps)
    assert torch.allclose(x, X0 * (1 + LAM / steps) ** steps, rtol=1e-12, atol=1e-12)
    assert info["nfe"] == steps and info["steps"] == steps


def test_euler_on_time_shifted_grid_matches_product_form():
    grid = time_grid(10, 3.0, dtype=torch.float64)
    x, info = integrate(field, X0, "euler", 10, time_shift=3.0)
    assert torch.allclose(x, X0 * torch.prod(1 + LAM * grid.diff()), rtol=1e-12)
    assert info["nfe"] == 10


@pytest.mark.parametrize("solver", ["midpoint", "heun"])
def test_second_order_solvers_match_closed_form(solver):
    n = 8
    h = LAM / n
    x, info = integrate(field, X0, solver, n)
    assert torch.allclose(x, X0 * (1 + h + h * h / 2) ** n, rtol=1e-12)  # both are RK2 on a linear field
    assert info["nfe"] == 2 * n


@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_dopri5_reaches_tolerance_and_counts_nfe(tol):
    calls = []

    def counted(x, t):
        calls.append(1)
        return field(x, t)

    x, info = integrate(counted, X0, "dopri5", rtol=tol, atol=tol)
    exact = X0 * math.exp(LAM)
    assert ((x - exact).abs() <= 10 * (tol + tol * exact.abs())).all()
    assert info["nfe"] == len(calls) >= 6 and info["steps"] is None


def test_dopri5_needs_more_evaluations_for_tighter_tolerance():
    loose = integrate(lambda x, t: torch.sin(8 * t) * x, X0, "dopri5", rtol=1e-3, atol=1e-3)[1]["nfe"]
    tight = integrate(lambda x, t: torch.sin(8 * t) * x, X0, "dopri5", rtol=1e-9, atol=1e-9)[1]["nfe"]
    assert tight > loose


def test_time_grid_shape_and_shift():
    g1 = time_grid(8)
    assert len(g1) == 9 and g1[0] == 0 and g1[-1] == 1
    assert torch.allclose(g1.diff(), torch.full((8,), 1 / 8))
    g3 = time_grid(8, 3.0)
    assert g3[0] == 0 and g3[-1] == 1 and (g3.diff() > 0).all()
    assert g3.diff()[0] < g1.diff()[0] < g3.diff()[-1]  # s > 1: small steps near the noise (t = 0)
    with pytest.raises(ValueError):
        integrate(field, X0, "rk45")
