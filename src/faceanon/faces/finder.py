"""Every face of a photo found: detected, its 68 landmarks located, aligned to an FFHQ crop,
its region masked (:class:`FaceFinder`, giving :class:`Face`). :mod:`faceanon.faces.replace`
transforms the crops and pastes them back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faceanon.faces.align import Alignment, ffhq_alignment, warp_to_crop
from faceanon.faces.masks import (
    KEEP_GRID,
    EllipseMask,
    FaceMask,
    LandmarkMask,
    Mask,
    with_points,
)
from faceanon.secure.container import Box, Geometry

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, eq=False)
class Face:
    box: Box
    geometry: Geometry
    from_landmarks: bool = True  # False: landmarks were implausible, a box-based fallback


def _box_geometry(box: Box, size: int) -> Geometry:
    """Fallback when landmarks fail: an upright square twice the box, an ellipse in the box."""
    x0, y0, x1, y1 = box
    side = 2.0 * max(x1 - x0, y1 - y0)
    scale = size / side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    alignment = Alignment(matrix, size)
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ellipse = np.stack(
        [cx + (x1 - x0) / 2 * np.cos(angles), cy + (y1 - y0) / 2 * np.sin(angles)], axis=1
    )
    return Geometry(alignment, LandmarkMask(alignment.to_crop(ellipse), size))


def crop_geometry(size: int, mask: Mask | None = None) -> Geometry:
    """An aligned crop seen as a photo with one face: identity alignment, the default ellipse."""
    return Geometry(Alignment(np.eye(2, 3), size), EllipseMask() if mask is None else mask)


def _plausible(box: Box, alignment: Alignment, mask: LandmarkMask) -> bool:
    """The landmark mask, in the photo, is about the size of the box and centred in it."""
    import cv2

    polygon = alignment.to_photo(mask.polygon).astype(np.float32)
    area = cv2.contourArea(polygon)
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    cx, cy = polygon.mean(axis=0)
    return bool(
        0.3 * box_area < area < 4 * box_area and box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    )


Segmenter = Callable[[np.ndarray], np.ndarray]


def _segmented_mask(segmenter: Segmenter, crop: np.ndarray) -> Mask | None:
    """What a face-parsing model marks as face, in its largest region: with a crop side that
    ``KEEP_GRID`` divides, as the cells of the crop to keep (:class:`FaceMask`, public: the
    outline is the whole crop, nothing is sealed), else as the region's outline; None if it
    marks almost nothing."""
    import cv2

    region = np.asarray(segmenter(crop), dtype=bool)
    if region.shape != crop.shape[:2]:
        raise ValueError(f"segmenter returned shape {region.shape}, expected {crop.shape[:2]}")
    contours, _ = cv2.findContours(
        region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    if cv2.contourArea(largest) < 0.02 * region.size:
        return None
    outline = LandmarkMask(largest.reshape(-1, 2).astype(np.float64), crop.shape[0])
    if crop.shape[0] % KEEP_GRID:
        return outline
    return FaceMask.from_parsing(region & outline.crop_mask())


class FaceFinder:
    """Detector + 68 landmarks -> per face: box, FFHQ alignment, mask polygon.

    ``recall``: ``high`` (default) also searches the photo framed by its mirror image (faces
    cut by the border) and enlarged 2x (faces under ~24 px), 5-7x the detection time of
    ``standard`` (the photo as is); ``pad`` and ``upscale`` give one of the two
    (benchmarks/recall.py, docs/benchmarks.md "Detection recall").

    The mask: the landmark polygon (default), a face parser's (``segmenter``), or with
    ``ellipse`` the fixed ellipse of an aligned crop (the landmarks still align the face).
    ``hint`` (``landmarks_5`` / ``landmarks_26``: a landmark ControlNet's): the mask also
    carries the hint points from these landmarks, stored with the output.

    ``segmenter`` is a face-parsing model (:class:`faceanon.faces.parser.FaceParser`, or any
    callable taking the aligned (size, size, 3) uint8 crop and returning a boolean (size, size)
    array, True on the pixels to anonymize). The outline of its largest region replaces the
    landmark polygon, and the cells inside it that the model does not call face are kept
    (:class:`faceanon.faces.masks.FaceMask`); if it marks almost nothing, the landmark polygon is
    kept.
    """

    def __init__(
        self,
        detector: str = "yunet",
        threshold: float | None = None,
        size: int = 256,
        sideways: bool = True,
        segmenter: Segmenter | None = None,
        recall: str = "high",  # faceanon.faces.detect.DEFAULT_RECALL
        ellipse: bool = False,
        hint: str | None = None,
    ):
        from faceanon.faces.detect import make_detector, with_recall
        from faceanon.faces.landmarks import Dlib68

        self.detector = with_recall(make_detector(detector, threshold), recall)
        self.landmarks = Dlib68()
        self.size, self.sideways, self.segmenter = size, sideways, segmenter
        self.ellipse = ellipse
        self.hint = hint if hint in ("landmarks_5", "landmarks_26") else None

    def find(self, photo: np.ndarray) -> list[Face]:
        """Every face; with ``sideways`` also faces lying at a quarter turn (3x detection)."""
        from faceanon.faces.detect import detect_turned

        found = detect_turned(self.detector, photo, (0, 1, 3) if self.sideways else (0,))
        return [self.at(photo, d.box, d.turns) for d in found]

    def at(self, photo: np.ndarray, box: Box, turns: int = 0) -> Face:
        """The face whose box is known (found by the detector, or stored in the metadata);
        landmarks are found in the photo turned by ``turns`` quarter turns."""
        from faceanon.faces.detect import turn_box, turn_points

        if turns % 4:
            turned = np.ascontiguousarray(np.rot90(photo, turns))
            points = self.landmarks(turned, turn_box(box, turns, photo.shape))
            points = turn_points(points, -turns, turned.shape)
        else:
            points = self.landmarks(photo, box)
        alignment = ffhq_alignment(points, self.size)
        mask = LandmarkMask.from_landmarks(alignment.to_crop(points), self.size)
        if not _plausible(box, alignment, mask):
            return Face(box, _box_geometry(box, self.size), from_landmarks=False)
        region: Mask = mask
        if self.ellipse:
            region = EllipseMask()  # public: the metadata stores it, nothing is sealed
        elif self.segmenter is not None:
            region = _segmented_mask(self.segmenter, warp_to_crop(photo, alignment)) or mask
        if self.hint is not None:
            from faceanon.faces.hints import hint_points

            region = with_points(
                region, hint_points(alignment.to_crop(points), self.hint), self.size
            )
        return Face(box, Geometry(alignment, region))
