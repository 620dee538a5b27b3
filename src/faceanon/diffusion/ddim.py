"""One deterministic DDIM step (eta = 0): pure tensor math, METHOD §3.

Both directions are the same ODE step on the scaled variable z / sqrt(a):

    z_to / sqrt(a_to) = z_from / sqrt(a_from) + (sqrt(1/a_to - 1) - sqrt(1/a_from - 1)) * eps

with eps evaluated at the current point (z_from, t_from). Towards less noise (a_to > a_from) it
is the reverse step, eq. (2); towards more noise it is the inversion step, eq. (3). The paper
prints these without the sqrt(a_{t-1}) factor; this is the corrected form (Song et al. eq. 13),
identical to diffusers' DDIMScheduler / DDIMInverseScheduler with eta = 0.
"""

from __future__ import annotations

import math

import torch


def ddim_step(z: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Move ``z`` from alpha-bar ``a_from`` to ``a_to``, given ``eps = eps(z, t_from)``."""
    if not (0.0 < a_from <= 1.0 and 0.0 < a_to <= 1.0):
        raise ValueError(f"alpha-bar values must lie in (0, 1], got {a_from}, {a_to}")
    # Multiply the equation through by sqrt(a_to); coefficients in float64, one rounding each.
    scale = math.sqrt(a_to / a_from)
    coef = math.sqrt(1.0 - a_to) - math.sqrt(a_to) * math.sqrt(1.0 / a_from - 1.0)
    return scale * z + coef * eps
