"""Identity hiding (after Diff-Privacy, He et al. 2024): a new face for people that a chosen
recognizer still matches to the original person, restorable with the key.

The keyed map of :mod:`faceanon.methods.keyflip` is run once more from the same changed noise
z_T, with identity guidance in the sampling: at each step the noise prediction is moved along
the gradient of the chosen recognizer's cosine between the predicted clean face and the
original's embedding (classifier guidance, Dhariwal and Nichol 2021, with the gradient taken
through the clean-face prediction only). Guidance acts while alpha-bar >= ``MIN_ALPHA``: on
the noisiest levels the predicted face is a blur whose gradient only adds noise.

What the restore does not do: undo the guidance. The guided sampling cannot be inverted
without the original's embedding, and carrying that embedding under the key would let anyone
check a key guess in microseconds (decode it, compare with the protected face's embedding;
faceanon's metadata never offers such a check, see :mod:`faceanon.secure.seal`). So the file
carries, beside the protected face, the exact latent of the *unguided* face of the same z_T
(:mod:`faceanon.media.latents`), and the restore is keyflip's from there. The unguided face is
just another anonymized face (what ``--method keyflip`` would publish): it adds no secret.

What remains, and no design removes it: the right key's restore is the original person, whom
the guided recognizer matches to the protected face, so a restore with a guessed key can be
checked with that recognizer: a full restore per guess. Use generated keys, never short
passphrases, with this method.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from faceanon.backbones.base import Backbone
from faceanon.faces.torch_recognizers import CropRecognizer

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]

DEFAULT_SCALE = 40.0  # docs/evaluation.md "Identity hiding": scales 10, 20, 40, 80 measured
MIN_ALPHA = 0.3


class IdentityGuide:
    """Wraps a noise predictor: eps - scale * sqrt(1 - a) * mask * d cos(R(decode(x0)), e*) / d x0,
    x0 the clean latent predicted from (z, eps), e* each crop's target embedding (B, D), the
    recognizer aligning each crop by ``points`` (the original's, which the new face keeps)."""

    def __init__(
        self,
        backbone: Backbone,
        recognizer: CropRecognizer,
        targets: torch.Tensor,
        mask: torch.Tensor,
        scale: float = DEFAULT_SCALE,
        points: torch.Tensor | None = None,
    ) -> None:
        self.backbone, self.recognizer, self.points = backbone, recognizer, points
        self.targets = targets.detach()
        self.mask, self.scale = mask, scale

    def __call__(self, eps: EpsFn) -> EpsFn:
        alphas = self.backbone.schedule.alphas_cumprod

        def guided(z: torch.Tensor, t: int) -> torch.Tensor:
            e = eps(z, t)
            a = float(alphas[t])
            if a < MIN_ALPHA or self.scale == 0:
                return e
            with torch.enable_grad():
                x0 = ((z - (1 - a) ** 0.5 * e) / a**0.5).detach().requires_grad_(True)
                image = self.backbone.decode(x0)
                embedded = self.recognizer(image, self.points)
                similarity = (embedded * self.targets.to(image)).sum()
                (gradient,) = torch.autograd.grad(similarity, x0)
            step = self.scale * (1 - a) ** 0.5 * gradient
            return e - torch.where(self.mask.to(z.device), step.to(e.dtype), torch.zeros_like(e))

        return guided
