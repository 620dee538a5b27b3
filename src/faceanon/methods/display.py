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

In a video, each tracked face is shown steadied (:class:`Steady`): blended with the track's
face as shown in the frame before. Each frame's new face is drawn from that frame alone, so
its shading and shape move from frame to frame more than the person's do (issue 28: 1.6-2.0x
the original's flicker); the blend halves that jitter. The exact faces, which the restore
starts from, are not blended.
"""

from __future__ import annotations

import numpy as np
import torch

from faceanon.backbones.base import Backbone
from faceanon.limits import MIN_DISPLAY
from faceanon.methods.embedded import embedded_setting

DEFAULT_LEVEL = 0.965
# The weight of a frame's own face in what a video shows (the rest: the track's face as shown
# in the frame before). One 24-frame clip, face-prior (docs/benchmarks.md, "Stable faces over
# time"): 0.7 / 0.6 / 0.5 / 0.35 gave 1.13-1.34x / 1.07-1.14x / 0.88-0.90x / 0.77-0.78x the
# original's flicker, against 1.56-1.79x unblended; identity along the track 0.77-0.79 /
# 0.81-0.83 / 0.83-0.84 / 0.82-0.84 against the original's 0.892 (0.77-0.82 unblended). 0.5:
# a frame's face and the track's count alike; 0.6 met both targets too, with less margin (one
# setting's runs move by about 0.3x).
TRACK_WEIGHT = 0.5


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


class Steady:
    """A video's tracked faces as shown: each aligned crop blended with its track's previous
    shown crop (``weight``: the new crop's share), the track known by its nonce. The state is
    one float crop per track; :meth:`keep` drops the tracks that ended."""

    def __init__(self, weight: float = TRACK_WEIGHT) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self.last: dict[bytes, np.ndarray] = {}

    def __call__(self, shown: list[np.ndarray], nonces: list[bytes | None]) -> list[np.ndarray]:
        out = []
        for face, nonce in zip(shown, nonces, strict=True):
            if nonce is None:  # not a track (a photo's face)
                out.append(face)
                continue
            now = face.astype(np.float32)
            last = self.last.get(nonce)
            if last is not None and last.shape == now.shape:
                now = last + self.weight * (now - last)
            self.last[nonce] = now
            out.append(np.clip(np.rint(now), 0, 255).astype(np.uint8))
        return out

    def keep(self, nonces: set[bytes | None]) -> None:
        """Forget every track but these (the ones still in the video)."""
        self.last = {n: c for n, c in self.last.items() if n in nonces}
