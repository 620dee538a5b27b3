"""The classic, irreversible methods on aligned crops: blur, pixelate, solid fill.

They are the baselines the evaluation compares against and the fast path for users who need no
reversibility. Strengths are relative to the crop (whose side is about twice the face width),
so a face gets the same treatment whatever its size in the photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Blur:
    """Gaussian blur with sigma = ``strength`` x the crop side (0.04: about 10 px at 256)."""

    strength: float = 0.04
    name: str = "blur"

    def __call__(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2

        return [
            cv2.GaussianBlur(
                c, (0, 0), sigmaX=self.strength * c.shape[1], borderType=cv2.BORDER_REFLECT
            )
            for c in crops
        ]


@dataclass(frozen=True)
class Pixelate:
    """Mean colour over ``blocks`` x ``blocks`` cells of the crop (16: 16 px cells at 256)."""

    blocks: int = 16
    name: str = "pixelate"

    def __call__(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2

        out = []
        for c in crops:
            small = cv2.resize(c, (self.blocks, self.blocks), interpolation=cv2.INTER_AREA)
            out.append(cv2.resize(small, c.shape[1::-1], interpolation=cv2.INTER_NEAREST))
        return out


@dataclass(frozen=True)
class Solid:
    """A flat fill of ``colour`` (RGB)."""

    colour: tuple[int, int, int] = (0, 0, 0)
    name: str = "solid"

    def __call__(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.broadcast_to(np.array(self.colour, np.uint8), c.shape).copy() for c in crops]
