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
(docs/benchmarks.md). It needs nothing but the image. keyflip stops a step's iterations where
they have converged (``settle``): about a third fewer calls with the embedded model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from faceanon.diffusion.ddim import ddim_step
from faceanon.diffusion.schedule import Levels

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[], None]
SETTLED = 1e-4  # a fixed-point iteration that moves no latent value this much has converged


def invert(
    eps: EpsFn,
    z0: torch.Tensor,
    levels: Levels,
    on_call: StepCallback | None = None,
    refine: int = 0,
    settle: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Run T inversion steps (eq. 3) from ``z0``; return the trajectory ``[z_0, ..., z_T]``.

    ``refine`` fixed-point iterations per step (0: plain DDIM inversion); ``on_call`` is called
    after every network evaluation: T in all for DDIM, T * K + 1 for fixed-point.

    ``settle`` (a bool mask broadcastable to z0, e.g. keyflip's (B, 1, h, w) face mask): stop
    iterating a step early where it has converged, separately for each latent of the batch and
    for each side of the mask: a side whose last iteration moved none of its values by
    ``SETTLED`` or more keeps them (and the eps that gave them) and is not iterated again at
    this step. Each side's decision looks at that side alone, so a predictor whose outside
    depends only on the outside (keyflip's masked eps) inverts the outside the same way
    whatever the inside holds, as the exact round trip needs (METHOD §7); a batch's other
    latents change nothing either. A step stops calling the network once everything has
    settled; ``on_call`` is still called once for each call skipped, so that a count of calls
    reaches T * K + 1.
    """
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")

    def call(z: torch.Tensor, t: int) -> torch.Tensor:
        out = eps(z, t)
        if on_call is not None:
            on_call()
        return out

    sides = None if settle is None else [settle.expand_as(z0), (~settle).expand_as(z0)]
    trajectory = [z0]
    z = z0
    last: torch.Tensor | None = None
    for i in range(levels.steps):
        a_from, a_to, t = levels.alphas[i], levels.alphas[i + 1], levels.timesteps[i + 1]
        e = call(z, t) if refine == 0 or last is None else last
        guess = ddim_step(z, e, a_from, a_to)
        settled = torch.zeros_like(z0, dtype=torch.bool)
        for k in range(refine):
            if sides is not None and bool(settled.all()):
                for _ in range(refine - k):  # the calls skipped, for a count of calls
                    if on_call is not None:
                        on_call()
                break
            new_e = call(guess, t)
            new = ddim_step(z, new_e, a_from, a_to)
            if sides is None:
                e, guess = new_e, new
                continue
            moved = torch.where(settled, 0.0, (new - guess).abs())
            e, guess = torch.where(settled, e, new_e), torch.where(settled, guess, new)
            for side in sides:
                most = torch.where(side, moved, 0.0).flatten(1).amax(dim=1)  # per latent
                settled |= side & (most < SETTLED).reshape(-1, *[1] * (z0.dim() - 1))
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
