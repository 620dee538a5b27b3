"""Hint images for the authors' ControlNets: the face mask, or landmarks drawn as squares.

The authors' hints (``PLabarbarie/diffusion-signflip-anon``) are 3-channel 0/1 images of the
256 x 256 face crop: for ``segmentation_masks`` the binarised BiSeNet face mask, for
``landmarks_5`` / ``landmarks_26`` a 3 x 3 square of ones at each landmark of RTMPose's whole-body
model (COCO-WholeBody indices 0, 1, 2, 71, 77 and 0-4, 23-39, 71, 74, 77, 80).

faceanon's mask hint is the mask the method uses (landmark polygon or face parser, minus the
cells kept for occluders), which travels sealed with the output, so de-anonymization sees the
hint anonymization saw. The landmark hints come from dlib's 68 points on the crop, mapped to
the whole-body points: nose 30; eyes the centres of 36-41 and 42-47; mouth corners 48 and 54,
upper and lower lip 51 and 57; the jaw line 0-16 for the 17 face-contour points; no dlib point
is an ear, so the ears are the jaw's ends (0 and 16). In photos they come from the landmarks
that aligned the face and are stored with the output in the clear (``FaceMask.points``): a
landmark-conditioned face shows those landmarks anyway, so sealing them would let the image
check a key. Without stored points (aligned crops) they are found on the crop being processed,
the original face and then the anonymized one, as the authors do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceanon.faces.masks import EllipseMask, Mask

SQUARE = 1  # half-side of the landmark squares (3 x 3 pixels, the authors' window_size=1)

# Where dlib's 68 points give each whole-body point (a list: the mean of several).
_BODY = {"nose": [30], "left_eye": list(range(42, 48)), "right_eye": list(range(36, 42))}
LANDMARKS_5 = [_BODY["nose"], _BODY["left_eye"], _BODY["right_eye"], [48], [54]]
LANDMARKS_26 = (
    [_BODY["nose"], _BODY["left_eye"], _BODY["right_eye"], [16], [0]]
    + [[i] for i in range(17)]
    + [[54], [48], [51], [57]]
)
KINDS = {"segmentation_masks": None, "landmarks_5": LANDMARKS_5, "landmarks_26": LANDMARKS_26}

# Where the face sits in an FFHQ-aligned crop, as fractions of its side: the box dlib's
# landmark model is given on a crop.
CROP_FACE_BOX = (0.2, 0.28, 0.8, 0.88)


def mask_pixels(mask: Mask, size: int) -> np.ndarray:
    """Boolean (size, size): the pixels of the crop the mask calls face."""
    crop_mask = getattr(mask, "crop_mask", None)
    if crop_mask is not None and getattr(mask, "size", None) == size:
        return np.asarray(crop_mask(), dtype=bool)
    if isinstance(mask, EllipseMask):
        return mask.grid(size, size)
    raise ValueError(f"cannot draw a {type(mask).__name__} at {size} px")


def draw_points(points: np.ndarray, size: int) -> np.ndarray:
    """Float32 (size, size): 1 in a 3 x 3 square at each point, clipped to the crop."""
    canvas = np.zeros((size, size), np.float32)
    for x, y in np.asarray(points, dtype=np.float64):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = int(x), int(y)
        x0, x1 = max(cx - SQUARE, 0), min(cx + SQUARE + 1, size)
        y0, y1 = max(cy - SQUARE, 0), min(cy + SQUARE + 1, size)
        if x0 < x1 and y0 < y1:
            canvas[y0:y1, x0:x1] = 1.0
    return canvas


def hint_points(landmarks68: np.ndarray, kind: str) -> np.ndarray:
    """(N, 2) whole-body points (N = 5 or 26) from dlib's 68."""
    groups = KINDS[kind]
    if groups is None:
        raise ValueError(f"{kind} is not a landmark hint")
    return np.array([landmarks68[g].mean(axis=0) for g in groups])


class HintMaker:
    """Hints of one kind for batches of aligned crops and their masks."""

    def __init__(self, kind: str, size: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"hint kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.size = kind, size
        self._landmarks = None

    def one(self, crop: np.ndarray, mask: Mask) -> np.ndarray:
        """Float32 (size, size) in {0, 1}."""
        if self.kind == "segmentation_masks":
            return mask_pixels(mask, self.size).astype(np.float32)
        stored = getattr(mask, "points", None)  # found with the face, kept in the metadata
        if stored is not None:
            return draw_points(stored * (self.size / crop.shape[0]), self.size)
        if self._landmarks is None:
            from faceanon.faces.landmarks import Dlib68

            self._landmarks = Dlib68()  # type: ignore[assignment]
        box = tuple(v * crop.shape[0] for v in CROP_FACE_BOX)
        points = self._landmarks(crop, box)  # type: ignore[misc]
        scale = self.size / crop.shape[0]
        return draw_points(hint_points(points, self.kind) * scale, self.size)

    def __call__(self, crops: Sequence[np.ndarray], masks: Sequence[Mask]) -> np.ndarray:
        """Float32 (B, 3, size, size): the hint repeated on 3 channels, as the authors feed it."""
        one = [self.one(c, m) for c, m in zip(crops, masks, strict=True)]
        return np.repeat(np.stack(one)[:, None], 3, axis=1)
