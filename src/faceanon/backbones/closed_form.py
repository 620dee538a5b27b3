"""A backbone whose noise predictor is exact, for testing the engine for real.

Data are Gaussian, x ~ N(mu, sigma^2 I), in a latent space reached by 4x4 average pooling
(decode: nearest-neighbour upsampling, so encode(decode(z)) == z exactly). For z_t =
sqrt(a) x + sqrt(1 - a) n the minimum-MSE noise prediction is

    E[n | z_t] = sqrt(1 - a) (z_t - sqrt(a) mu) / (a sigma^2 + 1 - a),

so DDIM here integrates the true probability-flow ODE, and its only error is the step size:
the inversion round-trip error shrinks as T grows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceanon.diffusion.schedule import NoiseSchedule


def reference_schedule() -> NoiseSchedule:
    """The schedule of the reference LDM (METHOD §2): scaled_linear 0.0015 -> 0.0195."""
    return NoiseSchedule.from_betas(0.0015, 0.0195, "scaled_linear", 1000)


class GaussianBackbone:
    name: str = "closed-form"
    revision: str | None = None

    def __init__(
        self,
        mu: float = 0.0,
        sigma: float = 0.5,
        image_size: int = 256,
        factor: int = 4,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        if image_size % factor:
            raise ValueError("image_size must be a multiple of factor")
        self.mu, self.sigma, self.factor = mu, sigma, factor
        self.image_size = image_size
        self.latent_shape = (3, image_size // factor, image_size // factor)
        self.schedule = schedule or reference_schedule()
        self.device = torch.device("cpu")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(latents, scale_factor=self.factor, mode="nearest")

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        a = float(self.schedule.alphas_cumprod[timestep])
        scale = math.sqrt(1.0 - a) / (a * self.sigma**2 + 1.0 - a)
        return scale * (latents - math.sqrt(a) * self.mu)
