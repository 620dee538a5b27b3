"""FFHQ-style alignment: eyes and mouth -> an oriented square -> a size x size crop.

The square follows the FFHQ recipe (Karras et al., ``ffhq-dataset``): its axis runs from the
eye midpoint towards the mouth, its half-side is max(2 x eye distance, 1.8 x eye-to-mouth), and
its centre sits 0.1 of the eye-to-mouth vector below the eyes. The crop is the similarity
transform that maps that square onto [0, size]^2; its exact inverse maps the crop back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """A similarity transform photo -> crop: ``crop_xy = matrix @ [x, y, 1]``."""

    matrix: np.ndarray  # (2, 3) float64
    size: int

    @property
    def inverse(self) -> np.ndarray:
        """The (2, 3) crop -> photo transform."""
        linear = self.matrix[:, :2]
        inv = np.linalg.inv(linear)
        return np.hstack([inv, -inv @ self.matrix[:, 2:]])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points @ self.matrix[:, :2].T + self.matrix[:, 2])

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        inverse = self.inverse
        return np.asarray(points @ inverse[:, :2].T + inverse[:, 2])

    def quad(self) -> np.ndarray:
        """The crop's corners in photo coordinates, clockwise from the top-left."""
        s = float(self.size)
        return self.to_photo(np.array([[0, 0], [s, 0], [s, s], [0, s]], dtype=np.float64))


def ffhq_alignment(landmarks: np.ndarray, size: int = 256) -> Alignment:
    """The FFHQ alignment of a face given its 68 landmarks."""
    eye_left = landmarks[36:42].mean(axis=0)
    eye_right = landmarks[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (landmarks[48] + landmarks[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye axis minus rot90
    x /= np.hypot(*x)
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    center = eye_avg + eye_to_mouth * 0.1
    # Photo -> crop: rotate x onto the crop's x axis, scale half-side to size / 2, centre.
    scale = size / (2.0 * half)
    cos, sin = x[0] * scale, x[1] * scale
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([size / 2.0, size / 2.0]) - linear @ center
    return Alignment(np.hstack([linear, offset[:, None]]), size)


def warp_to_crop(image: np.ndarray, alignment: Alignment) -> np.ndarray:
    """The aligned (size, size, 3) uint8 crop; outside the photo is filled by reflection."""
    import cv2

    return cv2.warpAffine(
        image,
        alignment.matrix,
        (alignment.size, alignment.size),
        flags=cv2.INTER_LANCZOS4,
        borderMode=cv2.BORDER_REFLECT_101,
    )


# insightface's 112 x 112 five-point template (ArcFace, SFace's alignCrop): image-left eye,
# image-right eye, nose tip, image-left and image-right mouth corners.
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def image_order(five: np.ndarray) -> np.ndarray:
    """YuNet's five points (5, 2) in :data:`TEMPLATE_112`'s order: YuNet gives the eyes and
    mouth corners image-left first already, except on a mirrored face."""
    return five if five[0, 0] <= five[1, 0] else five[[1, 0, 2, 4, 3]]
