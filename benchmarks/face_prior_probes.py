"""What the face-prior benchmarks share: held-out probes and one keyflip round trip on them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from faceanon.faces.masks import EllipseMask
from faceanon.methods.keyflip import keyflip_latent
from faceanon.secure.keys import SecretKey, sign_vector


@dataclass(frozen=True)
class Probes:
    """Latents (B, 3, 64, 64) with the default ellipse mask and one sign vector each (flip)."""

    x: torch.Tensor
    mask: torch.Tensor  # (B, 1, 64, 64)
    signs: torch.Tensor

    @classmethod
    def of(cls, latents: np.ndarray) -> Probes:
        x = torch.from_numpy(latents.astype(np.float64))
        grid = torch.from_numpy(EllipseMask().grid(64, 64))[None, None]
        key = SecretKey(bytes(range(16)))
        signs = np.stack([sign_vector(key, (3, 64, 64), bytes([i]) * 16) for i in range(len(x))])
        return cls(x, grid.expand(len(x), 1, 64, 64), torch.from_numpy(signs))

    def rms(self, d: torch.Tensor) -> float:
        """Root mean square inside the mask."""
        return float(d[self.mask.expand_as(d)].pow(2).mean().sqrt())

    def round_trip(
        self, model: object, steps: int, refine: int
    ) -> tuple[torch.Tensor, float, float, float]:
        """Anonymize then deanonymize: (anonymized, its RMSE to the original, the restored
        one's, seconds)."""
        start = time.perf_counter()
        anon = keyflip_latent(model, self.x, self.signs, self.mask, steps, refine=refine)  # type: ignore[arg-type]
        back = keyflip_latent(model, anon, self.signs, self.mask, steps, refine=refine)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        return anon, self.rms(anon - self.x), self.rms(back - self.x), seconds
