"""The yardstick: the paper's keyflip loop written plainly with diffusers' schedulers.

This is what a user would otherwise run (and what the authors' code does): T inversion calls
with ``DDIMInverseScheduler``, the sign flip inside the mask, T sampling calls with
``DDIMScheduler`` re-injecting the inverted trajectory outside the mask, decode. The UNet is
called as loaded (float32, contiguous memory), one call per step, nothing cached.

It is not part of faceanon: the benchmarks time and measure it beside faceanon's engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

UnetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# CompVis/ldm-celebahq-256's scheduler (METHOD §2), also used by faceanon's built-in backbones.
REFERENCE_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
}


def schedulers(config: dict[str, Any], steps: int) -> tuple[Any, Any]:
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    inverse, forward = DDIMInverseScheduler(**config), DDIMScheduler(**config)
    inverse.set_timesteps(steps)
    forward.set_timesteps(steps)
    return inverse, forward


@torch.inference_mode()
def peer_invert(unet: UnetFn, z0: torch.Tensor, inverse: Any) -> list[torch.Tensor]:
    trajectory = [z0]
    z = z0
    for t in inverse.timesteps:
        z = inverse.step(unet(z, t), t, z).prev_sample
        trajectory.append(z)
    return trajectory


@torch.inference_mode()
def peer_sample(
    unet: UnetFn,
    z: torch.Tensor,
    forward: Any,
    mask: torch.Tensor | None = None,
    keep: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    for i, t in enumerate(forward.timesteps):
        z = forward.step(unet(z, t), t, z).prev_sample
        if mask is not None and keep is not None:
            z = torch.where(mask, z, keep[-2 - i])
    return z


def peer_keyflip_latent(
    unet: UnetFn,
    z0: torch.Tensor,
    signs: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    config: dict[str, Any] = REFERENCE_SCHEDULER,
) -> torch.Tensor:
    inverse, forward = schedulers(config, steps)
    trajectory = peer_invert(unet, z0, inverse)
    z_t = torch.where(mask, signs * trajectory[-1], trajectory[-1])
    return peer_sample(unet, z_t, forward, mask, trajectory)


def diffusers_unet(model: Any) -> UnetFn:
    """A diffusers UNet2DModel called the plain way."""
    return lambda z, t: model(z, t).sample


def backbone_unet(backbone: Any) -> UnetFn:
    """Any faceanon backbone's noise predictor behind the scheduler-style call."""
    return lambda z, t: backbone.eps(z, int(t))


@torch.inference_mode()
def peer_keyflip_images(
    unet_model: Any,
    vqvae: Any,
    images: torch.Tensor,
    signs: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    config: dict[str, Any] = REFERENCE_SCHEDULER,
) -> torch.Tensor:
    """Images (B, 3, 256, 256) in [-1, 1] -> anonymized images, as a plain script would."""
    z0 = vqvae.encode(images).latents
    z = peer_keyflip_latent(diffusers_unet(unet_model), z0, signs, mask, steps, config)
    return vqvae.decode(z).sample.clamp(-1, 1)
