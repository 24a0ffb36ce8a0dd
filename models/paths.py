"""The optimal-transport probability path with ``sigma_min`` (section 3.3, eq. 2).

    psi_t(y | y1) = (1 - (1 - sigma_min) t) y + t y1          (y ~ p0 = N(0, I))
    v_t(y | y1)   = (y1 - (1 - sigma_min) y) / (1 - (1 - sigma_min) t)

evaluated at ``y = psi_t(y0)`` the target velocity is ``y1 - (1 - sigma_min) y0``. Written as a
``flow_matching`` scheduler, ``alpha_t = t`` and ``sigma_t = 1 - (1 - sigma_min) t``, so the
package's :class:`AffineProbPath` samples ``x_t`` and ``dx_t`` for us.
"""

from __future__ import annotations

import torch
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import ConvexScheduler, SchedulerOutput
from torch import Tensor


class SigmaMinOTScheduler(ConvexScheduler):
    """``alpha_t = t``, ``sigma_t = 1 - (1 - sigma_min) t`` (sigma_min = 0 is ``CondOTScheduler``)."""

    def __init__(self, sigma_min: float = 1e-5) -> None:
        self.sigma_min = float(sigma_min)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        return SchedulerOutput(
            alpha_t=t,
            sigma_t=1 - (1 - self.sigma_min) * t,
            d_alpha_t=torch.ones_like(t),
            d_sigma_t=torch.full_like(t, -(1 - self.sigma_min)),
        )

    def kappa_inverse(self, kappa: Tensor) -> Tensor:
        # kappa = alpha / (alpha + sigma) = t / (1 + sigma_min t)
        return kappa / (1 - self.sigma_min * kappa)


def ot_path(sigma_min: float = 1e-5) -> AffineProbPath:
    """The eq. (2) path; ``ot_path(s).sample(x_0=y0, x_1=y1, t=t)`` gives ``x_t`` and ``dx_t``."""
    return AffineProbPath(scheduler=SigmaMinOTScheduler(sigma_min))


def conditional_velocity(x: Tensor, y1: Tensor, t: Tensor, sigma_min: float) -> Tensor:
    """Eq. (2) right-hand side ``(y1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t)`` (``t`` ``[B]``)."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    return (y1 - (1 - sigma_min) * x) / (1 - (1 - sigma_min) * t)
