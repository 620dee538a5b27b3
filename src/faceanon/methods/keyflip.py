"""The seed paper's method: flip key-derived signs of the DDIM-inverted noise inside the face.

Anonymization (eqs. 4-5) and de-anonymization (eqs. 6-7) are the same map with the same sign
vector r, because r * r = 1: invert, flip inside the mask, sample back while re-injecting the
inverted trajectory outside the mask, decode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from faceanon.backbones.base import Backbone
from faceanon.diffusion.ddim_settings import network_calls
from faceanon.diffusion.loops import EpsFn, invert, sample
from faceanon.diffusion.schedule import Levels

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
    e.g. the keyed mixing of :mod:`faceanon.secure.transforms`); ``mask`` is bool, (B, 1, h, w).
    Outside the mask the result equals ``z0`` exactly. ``refine``: fixed-point iterations per
    inversion step.
    ``progress(done, total)`` counts network calls
    (:func:`faceanon.diffusion.ddim_settings.network_calls`).
    ``hint``: a conditioned backbone's hint images (B, 3, S, S), used in both directions.
    """
    levels = backbone.schedule.levels(steps)
    tick = _counter(progress, network_calls(steps, refine))
    with torch.inference_mode():
        mask = mask.to(z0.device)
        eps = _eps(backbone, mask, hint)  # face-prior: the outside predicted from the outside
        z_t, trajectory = _changed(eps, z0, signs, mask, levels, tick, refine)
        return sample(eps, z_t, levels, mask, trajectory, tick)  # eqs. 2, 5 (7)


def guided_pair(
    backbone: Backbone,
    z0: torch.Tensor,
    signs: torch.Tensor | Change,
    mask: torch.Tensor,
    steps: int,
    guide: Callable[[EpsFn], EpsFn],
    progress: Progress | None = None,
    refine: int = 0,
    hint: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`keyflip_latent`'s z0' and, from the same changed z_T, the sample with the noise
    predictor wrapped by ``guide`` (``--method hide``, :mod:`faceanon.methods.hide`):
    (plain, guided). ``progress`` counts the inversion's calls and both samplings'."""
    levels = backbone.schedule.levels(steps)
    tick = _counter(progress, network_calls(steps, refine) + steps)
    with torch.no_grad():  # the guide differentiates the recognizer inside
        mask = mask.to(z0.device)
        eps = _eps(backbone, mask, hint)
        z_t, trajectory = _changed(eps, z0, signs, mask, levels, tick, refine)
        plain = sample(eps, z_t, levels, mask, trajectory, tick)
        return plain, sample(guide(eps), z_t, levels, mask, trajectory, tick)


def _changed(
    eps: EpsFn,
    z0: torch.Tensor,
    signs: torch.Tensor | Change,
    mask: torch.Tensor,
    levels: Levels,
    tick: Callable[[], None],
    refine: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The inversion of z0 (its trajectory) and z_T changed by the key inside the mask."""
    trajectory = invert(eps, z0, levels, tick, refine, settle=mask)  # eq. 3 (6)
    if callable(signs):
        changed = signs(trajectory[-1])
    else:
        changed = signs.to(device=z0.device, dtype=z0.dtype) * trajectory[-1]
    return torch.where(mask, changed, trajectory[-1]), trajectory  # eq. 4 (6)


def renoise_latent(
    backbone: Backbone,
    z0: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    strength: float,
    generator: torch.Generator,
    progress: Progress | None = None,
    hint: torch.Tensor | None = None,
) -> torch.Tensor:
    """The irreversible step of ``--method hydro`` (HYDRO's noise-and-restore): inside
    ``mask``, z0 noised to level k = round(strength * steps) with fresh Gaussian noise, then
    sampled back to level 0 while the outside is re-injected at every level as z0 noised with
    the same fresh draw (so it ends exactly at z0). The noise is new each call and kept nowhere:
    nothing can undo it. ``progress`` counts the k network calls."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    levels = backbone.schedule.levels(steps)
    k = max(1, round(strength * levels.steps))
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
    outside = [
        z0 * a**0.5 + noise * (1 - a) ** 0.5 for a in levels.alphas[: k + 1]
    ]  # the outside at each level, ending at z0 (alpha-bar 1 at level 0)
    outside[0] = z0
    head = Levels(levels.alphas[: k + 1], levels.timesteps[: k + 1])
    tick = _counter(progress, k)
    with torch.inference_mode():
        mask = mask.to(z0.device)
        eps = _eps(backbone, mask, hint)
        return sample(eps, outside[k], head, mask, outside, tick)


def _counter(progress: Progress | None, total: int) -> Callable[[], None]:
    """A callback for each network call that reports ``(calls so far, total)``."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _eps(backbone: Backbone, mask: torch.Tensor, hint: torch.Tensor | None) -> EpsFn:
    """The noise predictor the method calls: a masked one where the backbone has it, a
    conditioned one with a hint, else the plain one."""
    masked = getattr(backbone, "masked_eps", None)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        if masked is not None:
            return masked(z, t, mask)  # type: ignore[no-any-return]
        if hint is not None:
            return backbone.eps(z, t, hint=hint)  # type: ignore[call-arg]
        return backbone.eps(z, t)

    return eps
