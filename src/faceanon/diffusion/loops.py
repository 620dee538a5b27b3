"""DDIM inversion that keeps its trajectory, and sampling with masked re-injection (eqs. 3-7).

Labels: the step between levels i and i + 1 is labelled with the noisier level's training step,
``timesteps[i + 1]``, in both directions. Sampling from i + 1 to i evaluates ``eps(z_{i+1},
t_{i+1})`` (the current point); inversion from i to i + 1 evaluates ``eps(z_i, t_{i+1})``, the
label of the sampling step it undoes (diffusers' ``DDIMInverseScheduler``, CompVis
``DDIMSampler.encode``). Level 0's own label is never used.

Fixed-point inversion (``refine = K > 0``) solves each inversion step's implicit equation
``z_{i+1} = step(z_i, eps(z_{i+1}, t_{i+1}))``, i.e. for the point from which the sampling step
lands on ``z_i``, by K iterations. The first guess reuses the previous step's last eps (free; a
fresh plain DDIM step only for the first step), so K iterations cost K network calls per step,
T * K + 1 in all: at equal calls this beats starting each step from a fresh DDIM step
(docs/benchmarks.md). It needs nothing but the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from faceanon.diffusion.ddim import ddim_step
from faceanon.diffusion.schedule import Levels

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[], None]


def invert(
    eps: EpsFn,
    z0: torch.Tensor,
    levels: Levels,
    on_call: StepCallback | None = None,
    refine: int = 0,
) -> list[torch.Tensor]:
    """Run T inversion steps (eq. 3) from ``z0``; return the trajectory ``[z_0, ..., z_T]``.

    ``refine`` fixed-point iterations per step (0: plain DDIM inversion); ``on_call`` is called
    after every network evaluation: T in all for DDIM, T * K + 1 for fixed-point.
    """
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")

    def call(z: torch.Tensor, t: int) -> torch.Tensor:
        out = eps(z, t)
        if on_call is not None:
            on_call()
        return out

    trajectory = [z0]
    z = z0
    last: torch.Tensor | None = None
    for i in range(levels.steps):
        a_from, a_to, t = levels.alphas[i], levels.alphas[i + 1], levels.timesteps[i + 1]
        e = call(z, t) if refine == 0 or last is None else last
        guess = ddim_step(z, e, a_from, a_to)
        for _ in range(refine):
            e = call(guess, t)
            guess = ddim_step(z, e, a_from, a_to)
        last = e
        z = guess
        trajectory.append(z)
    return trajectory


def sample(
    eps: EpsFn,
    z_t: torch.Tensor,
    levels: Levels,
    mask: torch.Tensor | None = None,
    keep: Sequence[torch.Tensor] | None = None,
    on_call: StepCallback | None = None,
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
        if on_call is not None:
            on_call()
    return z
