"""ODE solvers for FM sampling (section 3.3, eq. 5; appendices D and H).

Fixed grid: Euler (eq. 5, ``y_{t+dt} = y_t + dt v(y_t, t)``, 1 evaluation per step), midpoint and
Heun (2 evaluations per step); adaptive: Dormand-Prince ``dopri5`` with ``rtol``/``atol``. All run
through ``flow_matching.solver.ODESolver`` (torchdiffeq); the number of function evaluations (NFE)
is counted by wrapping the velocity field.

Beyond the paper, fixed grids may be *time-shifted*: with ``sigma = 1 - t`` (1 at the noise end),

    sigma' = s sigma / (1 + (s - 1) sigma),   t' = 1 - sigma'

``s = 1`` is the uniform grid; ``s > 1`` packs steps near the noise (t = 0), ``s < 1`` near the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flow_matching.solver import ODESolver
from torch import Tensor

METHODS = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "dopri5": "dopri5"}
FIXED_STEP = ("euler", "midpoint", "heun")
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2}


def time_grid(steps: int, time_shift: float = 1.0, *, device=None, dtype=torch.float32) -> Tensor:
    """``[steps + 1]`` times from 0 to 1 (uniform for ``time_shift == 1``)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=torch.float64)
    if time_shift != 1.0:
        sigma = 1.0 - t
        t = 1.0 - time_shift * sigma / (1.0 + (time_shift - 1.0) * sigma)
        t[0], t[-1] = 0.0, 1.0
    return t.to(dtype)


class CountingField(torch.nn.Module):
    """Wraps ``field(x, t) -> v`` in the ``ModelWrapper`` call convention and counts its evaluations."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        self.nfe += 1
        return self.field(x, t)


def _grid_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def integrate(field: Callable[[Tensor, Tensor], Tensor], x0: Tensor, solver: str = "euler", steps: int = 50, *,
              time_shift: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5, grid: Tensor | None = None,
              return_intermediates: bool = False) -> tuple[Tensor, dict]:
    """Solve ``dx/dt = field(x, t)`` from ``grid[0]`` to ``grid[-1]`` (default: ``time_grid(steps, time_shift)``).

    Fixed-step solvers step on the grid; ``dopri5`` adapts its own steps between the grid's end
    points (or reports the state at every grid time with ``return_intermediates``). Returns the
    final state (or ``[len(grid), ...]`` states) and ``{"nfe", "solver", "steps"}``.
    """
    if solver not in METHODS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(METHODS)}")
    if grid is None:
        grid = time_grid(steps, time_shift, device=x0.device, dtype=_grid_dtype(x0))
    if solver == "dopri5" and not return_intermediates:
        grid = grid[[0, -1]]
    counter = CountingField(field)
    out = ODESolver(velocity_model=counter).sample(
        x_init=x0, step_size=None, method=METHODS[solver], atol=atol, rtol=rtol,
        time_grid=grid.to(device=x0.device), return_intermediates=return_intermediates)
    n_steps = len(grid) - 1 if solver in FIXED_STEP else None
    return out, {"nfe": counter.nfe, "solver": solver, "steps": n_steps}
