"""What a photo shows of an embedded model's anonymized face: the model's own estimate of it
without its noise (issue 26).

The embedded models' faces carry white noise on every coordinate (the floor that keeps the
inversion stable, ``face_prior`` and ``face_net``): colour speckle and grain that no face has,
and that made YuNet miss one face in nine. What is shown instead is the model's denoised
estimate of the anonymized latent z': the clean face its noise predictor gives from z' seen as
a sample at noise level alpha-bar ``level``,

    x_t = sqrt(a) z',   shown = (x_t - sqrt(1 - a) eps(x_t, t)) / sqrt(a),

inside the mask (the outside is the photo's). It cannot be undone, so the restore does not start
from it but from z' itself, which the file carries (its exact face data,
:mod:`faceanon.media.latents`, also in a PNG); z' is public like the shown face (the shown
face is a function of it), so nothing secret is added. A file stripped of that data restores
from the shown pixels, worse, and says so in one line.

Level chosen on 300 held-out faces64 crops: the first at which the colour speckle is under
1.3x the original's. On 1,000 (docs/benchmarks.md, "What the embedded models show"),
face-prior: speckle 1.26x (as they are: 3.68x), YuNet finds 98.4% of the faces (88.4%).
"""

from __future__ import annotations

import numpy as np
import torch

from faceanon.backbones.base import Backbone
from faceanon.limits import MIN_DISPLAY
from faceanon.methods.embedded import embedded_setting

DEFAULT_LEVEL = 0.965


def level_step(backbone: Backbone, level: float) -> int:
    """The schedule's timestep whose alpha-bar is nearest ``level``."""
    alphas = np.asarray(backbone.schedule.alphas_cumprod, dtype=np.float64)
    return int(np.argmin(np.abs(alphas - level)))


def denoised(
    backbone: Backbone, z: torch.Tensor, grids: torch.Tensor, level: float
) -> torch.Tensor:
    """``z`` (B, c, h, w) with the cells inside ``grids`` (bool, (B, 1, h, w)) replaced by the
    model's clean estimate at noise level ``level`` (module docstring)."""
    t = level_step(backbone, level)
    a = float(backbone.schedule.alphas_cumprod[t])
    noisy = z * a**0.5
    with torch.inference_mode():
        eps = backbone.eps(noisy, t)
    clean = (noisy - (1 - a) ** 0.5 * eps.to(z.dtype)) / a**0.5
    return torch.where(grids.to(z.device).expand_as(z), clean, z)


def checked_level(
    backbone: Backbone, paper_mode: bool, display: float | str | None
) -> float | None:
    """The denoised display's noise level (:class:`Anonymizer`'s ``display``), checked."""
    refusal = "only the embedded models' faces are shown denoised"
    return embedded_setting(
        backbone, paper_mode, display, "display", DEFAULT_LEVEL, MIN_DISPLAY, 1, refusal, True
    )
