"""What the method needs from a diffusion model: encode, decode, eps, schedule, shapes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from faceanon.diffusion.schedule import NoiseSchedule


@runtime_checkable
class Backbone(Protocol):
    """A pretrained unconditional diffusion model, pixel-space or latent.

    Images are float32 tensors (B, 3, S, S) in [-1, 1] with S = ``image_size``; latents are
    (B, *latent_shape). For a pixel-space model ``encode``/``decode`` are the identity.
    """

    name: str
    revision: str | None
    image_size: int
    latent_shape: tuple[int, int, int]
    schedule: NoiseSchedule
    device: torch.device

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor: ...
