"""Facial masks from 68 landmarks, in aligned-crop coordinates (METHOD §5, step 1).

The face region is the hull of the jaw line and the eyebrows raised to cover the forehead:
skin, brows, eyes, nose and mouth, but not hair or background. ``grid`` rescales it to the
backbone's latent grid; ``feathered`` is the soft version used to paste the face back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOREHEAD_RAISE = 0.3  # brows are raised by this fraction of the brow-to-chin height


@dataclass(frozen=True, eq=False)
class LandmarkMask:
    polygon: np.ndarray  # (N, 2) float64, crop pixel coordinates, convex
    size: int

    @classmethod
    def from_landmarks(cls, crop_landmarks: np.ndarray, size: int) -> LandmarkMask:
        import cv2

        jaw, brows = crop_landmarks[0:17], crop_landmarks[17:27]
        height = crop_landmarks[8, 1] - brows[:, 1].mean()
        raised = brows - np.array([0.0, FOREHEAD_RAISE * height])
        hull = cv2.convexHull(np.vstack([jaw, raised]).astype(np.float32))
        return cls(hull.reshape(-1, 2).astype(np.float64), size)

    def crop_mask(self) -> np.ndarray:
        """Boolean (size, size): pixels inside the face polygon."""
        import cv2

        canvas = np.zeros((self.size, self.size), np.uint8)
        # Sub-pixel vertices: 8 fractional bits.
        points = np.round(self.polygon * 256).astype(np.int32)
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=8)
        return canvas.astype(bool)

    def grid(self, height: int, width: int) -> np.ndarray:
        """Boolean (height, width): latent cells at least half covered by the face."""
        if self.size % height or self.size % width:
            raise ValueError(
                f"crop size {self.size} is not a multiple of the grid {height}x{width}"
            )
        mask = self.crop_mask().astype(np.float64)
        cells = mask.reshape(height, self.size // height, width, self.size // width)
        return np.asarray(cells.mean(axis=(1, 3)) >= 0.5)

    def feathered(self, grid: tuple[int, int], radius: float) -> np.ndarray:
        """Float32 (size, size) weights in [0, 1] for pasting back.

        Starts from the latent-grid mask upsampled to the crop (the region the method changed),
        grows it by ``radius`` pixels and blurs the edge over another ``radius`` pixels, so the
        whole changed region is pasted and the seam is soft.
        """
        import cv2

        height, width = grid
        cells = self.grid(height, width).astype(np.uint8)
        region = cv2.resize(cells, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        r = max(1, round(radius))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        grown = cv2.dilate(region, kernel).astype(np.float32)
        soft = cv2.GaussianBlur(grown, (0, 0), sigmaX=r / 2)
        return np.clip(np.maximum(soft, region.astype(np.float32)), 0.0, 1.0)
