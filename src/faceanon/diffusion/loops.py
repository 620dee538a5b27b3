"""DDIM inversion that keeps its trajectory, and sampling with masked re-injection (eqs. 3-7)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from faceanon.diffusion.ddim import ddim_step
from faceanon.diffusion.schedule import Levels

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[], None]


def invert(
    eps: EpsFn, z0: torch.Tensor, levels: Levels, on_step: StepCallback | None = None
) -> list[torch.Tensor]:
    """Run T inversion steps (eq. 3) from ``z0``; return the trajectory ``[z_0, ..., z_T]``."""
    trajectory = [z0]
    z = z0
    for i in range(levels.steps):
        z = ddim_step(z, eps(z, levels.timesteps[i]), levels.alphas[i], levels.alphas[i + 1])
        trajectory.append(z)
        if on_step is not None:
            on_step()
    return trajectory


def sample(
    eps: EpsFn,
    z_t: torch.Tensor,
    levels: Levels,
    mask: torch.Tensor | None = None,
    keep: Sequence[torch.Tensor] | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run T reverse steps (eq. 2) from level T to level 0.

    With ``mask`` (bool, broadcastable to z) and ``keep`` (a trajectory ``[z_0, ..., z_T]``),
    after each step the coordinates outside the mask are replaced by ``keep`` at the same level
    (eqs. 5 and 7), so they equal it exactly.
    """
    if (mask is None) != (keep is None):
        raise ValueError("mask and keep go together")
    if keep is not None and len(keep) != levels.steps + 1:
        raise ValueError(f"keep must hold {levels.steps + 1} latents, got {len(keep)}")
    z = z_t
    for i in range(levels.steps, 0, -1):
        z = ddim_step(z, eps(z, levels.timesteps[i]), levels.alphas[i], levels.alphas[i - 1])
        if mask is not None and keep is not None:
            z = torch.where(mask, z, keep[i - 1])
        if on_step is not None:
            on_step()
    return z
