"""Paste a processed aligned crop back into the photo (inverse warp + feathered blend).

Only pixels whose blend weight is above zero are written: every other pixel of the photo stays
byte-identical to the input.
"""

from __future__ import annotations

import numpy as np

from faceanon.faces.align import Alignment


def paste_back(
    photo: np.ndarray, crop: np.ndarray, alignment: Alignment, weight: np.ndarray
) -> np.ndarray:
    """A new photo with ``crop`` blended in where ``weight`` (crop coordinates) is positive."""
    import cv2

    height, width = photo.shape[:2]
    quad = alignment.quad()
    x0, y0 = np.floor(quad.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out = photo.copy()
    if x0 >= x1 or y0 >= y1:
        return out
    # Crop -> region-of-interest transform: the inverse alignment shifted to the ROI origin.
    to_roi = alignment.inverse - np.array([[0, 0, x0], [0, 0, y0]], dtype=np.float64)
    size = (x1 - x0, y1 - y0)
    w = cv2.warpAffine(
        weight.astype(np.float32),
        to_roi,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    warped = cv2.warpAffine(
        crop, to_roi, size, flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE
    )
    roi = out[y0:y1, x0:x1]
    blended = w[..., None] * warped.astype(np.float32) + (1 - w[..., None]) * roi.astype(np.float32)
    touched = w > 0
    roi[touched] = np.clip(np.round(blended[touched]), 0, 255).astype(np.uint8)
    return out
