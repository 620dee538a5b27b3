"""The seed paper's method: flip key-derived signs of the DDIM-inverted noise inside the face.

Anonymization (eqs. 4-5) and de-anonymization (eqs. 6-7) are the same map with the same sign
vector r, because r * r = 1: invert, flip inside the mask, sample back while re-injecting the
inverted trajectory outside the mask, decode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from faceanon.backbones.base import Backbone
from faceanon.diffusion.loops import invert, sample
from faceanon.engine import network_calls

Progress = Callable[[int, int], None]
Change = Callable[[torch.Tensor], torch.Tensor]  # z_T -> the key's change of it (whole tensor)


def keyflip_latent(
    backbone: Backbone,
    z0: torch.Tensor,
    signs: torch.Tensor | Change,
    mask: torch.Tensor,
    steps: int,
    progress: Progress | None = None,
    refine: int = 0,
    hint: torch.Tensor | None = None,
) -> torch.Tensor:
    """The method in latent space: z0 (B, c, h, w) -> z0' with z_T changed inside ``mask``.

    ``signs`` is the paper's flip, (B, c, h, w) in {-1, +1}, or any change of z_T (a callable,
    e.g. the keyed mixing of :mod:`faceanon.transforms`); ``mask`` is bool, (B, 1, h, w).
    Outside the mask the result equals ``z0`` exactly. ``refine``: fixed-point iterations per
    inversion step.
    ``progress(done, total)`` counts network calls (:func:`faceanon.engine.network_calls`).
    ``hint``: a conditioned backbone's hint images (B, 3, S, S), used in both directions.
    """
    levels = backbone.schedule.levels(steps)
    total = network_calls(steps, refine)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with torch.inference_mode():
        mask = mask.to(z0.device)
        masked = getattr(backbone, "masked_eps", None)

        def eps(z: torch.Tensor, t: int) -> torch.Tensor:
            if masked is not None:  # a model that predicts the outside from the outside alone
                return masked(z, t, mask)  # type: ignore[no-any-return]
            if hint is not None:
                return backbone.eps(z, t, hint=hint)  # type: ignore[call-arg]
            return backbone.eps(z, t)

        trajectory = invert(eps, z0, levels, tick, refine)  # eq. 3 (6)
        if callable(signs):
            changed = signs(trajectory[-1])
        else:
            changed = signs.to(device=z0.device, dtype=z0.dtype) * trajectory[-1]
        z_t = torch.where(mask, changed, trajectory[-1])  # eq. 4 (6)
        return sample(eps, z_t, levels, mask, trajectory, tick)  # eqs. 2, 5 (7)


def keyflip_images(
    backbone: Backbone,
    images: torch.Tensor,
    signs: torch.Tensor | Change,
    mask: torch.Tensor,
    steps: int,
    progress: Progress | None = None,
    refine: int = 0,
    hint: torch.Tensor | None = None,
) -> torch.Tensor:
    """The method on images (B, 3, S, S) in [-1, 1]: encode, :func:`keyflip_latent`, decode."""
    z0 = backbone.encode(images)
    changed = keyflip_latent(backbone, z0, signs, mask, steps, progress, refine, hint)
    return backbone.decode(changed)
