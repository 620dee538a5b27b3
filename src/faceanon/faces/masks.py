"""Face masks on the backbone's latent grid (METHOD §5, step 1), in aligned-crop coordinates.

``EllipseMask``: the default for aligned crops, a centred ellipse covering the face of an
FFHQ/CelebA-HQ style crop. ``LandmarkMask``: from 68 landmarks, the hull of the jaw line and the
eyebrows raised to cover the forehead (skin, brows, eyes, nose and mouth; not hair or
background), with a feathered version for pasting the face back into a photo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np


class Mask(Protocol):
    def grid(self, height: int, width: int) -> np.ndarray:
        """Boolean (height, width): the latent cells the method may change."""
        ...


@dataclass(frozen=True)
class EllipseMask:
    """An axis-aligned ellipse in coordinates relative to the crop (0..1 across and down)."""

    cx: float = 0.5
    cy: float = 0.6
    rx: float = 0.27
    ry: float = 0.33

    def __post_init__(self) -> None:
        if not (self.rx > 0 and self.ry > 0):
            raise ValueError("ellipse radii must be positive")

    def grid(self, height: int, width: int) -> np.ndarray:
        """Boolean (height, width): cells whose centre lies inside the ellipse."""
        y = (np.arange(height) + 0.5) / height
        x = (np.arange(width) + 0.5) / width
        inside = ((x[None, :] - self.cx) / self.rx) ** 2 + ((y[:, None] - self.cy) / self.ry) ** 2
        return np.asarray(inside <= 1.0)

    def polygon(self, size: int, points: int = 64) -> LandmarkMask:
        """The ellipse in a crop of ``size`` px, as a polygon (what a photo pastes)."""
        angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
        xy = np.stack([self.cx + self.rx * np.cos(angles), self.cy + self.ry * np.sin(angles)], 1)
        return LandmarkMask(xy * size, size)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "ellipse", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EllipseMask:
        if data.get("kind") != "ellipse":
            raise ValueError(f"unknown mask kind {data.get('kind')!r}")
        return cls(*(float(data[k]) for k in ("cx", "cy", "rx", "ry")))


FOREHEAD_RAISE = 0.3  # brows are raised by this fraction of the brow-to-chin height


@dataclass(frozen=True, eq=False)
class LandmarkMask:
    """A face polygon in crop pixels: from landmarks, or the outline from a face-parsing hook."""

    polygon: np.ndarray  # (N, 2) float64, crop pixel coordinates
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


KEEP_GRID = 64  # the resolution of ParsedMask.keep across the crop


def _cells(keep: np.ndarray, height: int, width: int) -> np.ndarray:
    """``keep`` (KEEP_GRID square) on a (height, width) grid: the majority of each coarser
    cell, or each cell repeated on a finer grid."""
    n = keep.shape[0]
    if height == width == n:
        return keep
    if n % height == 0 and n % width == 0:
        blocks = keep.reshape(height, n // height, width, n // width).astype(np.float64)
        return np.asarray(blocks.mean(axis=(1, 3)) >= 0.5)
    if height % n == 0 and width % n == 0:
        return np.repeat(np.repeat(keep, height // n, axis=0), width // n, axis=1)
    raise ValueError(f"the kept cells ({n}x{n}) do not fit a {height}x{width} grid")


def covering(mask: LandmarkMask, corners: np.ndarray) -> LandmarkMask:
    """``mask`` grown to the convex hull of its polygon and ``corners`` (crop pixels, e.g. a
    face's detection box), inside the crop."""
    import cv2

    hull = cv2.convexHull(np.vstack([mask.polygon, corners]).astype(np.float32))
    return LandmarkMask(np.clip(hull.reshape(-1, 2).astype(np.float64), 0, mask.size), mask.size)


@dataclass(frozen=True, eq=False)
class FaceMask:
    """A photo face's mask with public parts, stored in the clear beside the metadata.

    ``keep``: the cells of the crop that a face parser does not call face (a hand, a
    microphone, hair over the forehead): they stay as they were. ``points``: a landmark
    ControlNet's hint points (integer crop pixels), stored so that the restore draws the hint
    the anonymization drew. What they show, the output shows too (the kept pixels are the
    input's; a landmark-conditioned face keeps those landmarks). Because they trace the face,
    a sealed outline beside them would let a key guess be checked against them (issue 27):
    the outline is derived from them instead (:func:`public_outline`), and nothing is sealed.
    """

    outline: LandmarkMask
    keep: np.ndarray | None = None  # bool (KEEP_GRID, KEEP_GRID) over the crop
    points: np.ndarray | None = None  # int (N, 2), crop pixels

    def __post_init__(self) -> None:
        if self.keep is not None and (
            self.keep.shape != (KEEP_GRID, KEEP_GRID) or self.keep.dtype != bool
        ):
            raise ValueError(f"keep must be a {KEEP_GRID}x{KEEP_GRID} boolean grid")
        if self.points is not None and (self.points.ndim != 2 or self.points.shape[1] != 2):
            raise ValueError("points must be (N, 2)")

    @property
    def polygon(self) -> np.ndarray:
        return self.outline.polygon

    @property
    def size(self) -> int:
        return self.outline.size

    def crop_mask(self) -> np.ndarray:
        inside = self.outline.crop_mask()
        if self.keep is None:
            return inside
        return np.asarray(inside & ~_cells(self.keep, self.size, self.size))

    def grid(self, height: int, width: int) -> np.ndarray:
        cells = self.outline.grid(height, width)
        if self.keep is None:
            return cells
        return np.asarray(cells & ~_cells(self.keep, height, width))

    @classmethod
    def from_parsing(cls, face: np.ndarray) -> FaceMask:
        """From a parser's face pixels (boolean, the crop's shape): every cell of the crop where
        more than half of the pixels are not face is kept; the outline is the whole crop."""
        size = face.shape[0]
        if size % KEEP_GRID or face.shape != (size, size):
            raise ValueError(f"a parsed mask needs a crop side that {KEEP_GRID} divides")
        k = size // KEEP_GRID
        other = (~face).astype(np.float64).reshape(KEEP_GRID, k, KEEP_GRID, k)
        keep = np.asarray(other.mean(axis=(1, 3)) > 0.5)
        return cls(public_outline(size, keep, None), keep)

    def keep_bytes(self) -> bytes | None:
        return None if self.keep is None else np.packbits(self.keep).tobytes()


def public_outline(size: int, keep: np.ndarray | None, points: np.ndarray | None) -> LandmarkMask:
    """The outline of a face whose mask has public parts, from those parts alone: with kept
    cells, the whole crop (the parser's face is then exactly the cells not kept); with hint
    points only, their convex hull (the detection box grows it over the face, like every
    outline)."""
    import cv2

    if keep is not None or points is None or len(points) < 3:
        corners = [(0.0, 0.0), (size, 0.0), (size, size), (0.0, size)]
        return LandmarkMask(np.array(corners, dtype=np.float64), size)
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32))
    return LandmarkMask(hull.reshape(-1, 2).astype(np.float64), size)


def keep_from_bytes(data: bytes) -> np.ndarray:
    """The inverse of :meth:`FaceMask.keep_bytes`."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    if bits.size != KEEP_GRID * KEEP_GRID:
        raise ValueError(f"kept cells must be {KEEP_GRID * KEEP_GRID // 8} bytes")
    return bits.reshape(KEEP_GRID, KEEP_GRID).astype(bool)


def with_points(mask: Mask, points: np.ndarray, size: int) -> FaceMask:
    """``mask``'s kept cells (if any) with hint ``points``, as whole pixels inside the crop of
    ``size`` px (what the metadata stores); the outline is derived from them
    (:func:`public_outline`), whatever ``mask``'s was."""
    ints = np.clip(np.floor(np.nan_to_num(points)), 0, size - 1).astype(np.int64)
    keep = mask.keep if isinstance(mask, FaceMask) else None
    return FaceMask(public_outline(size, keep, ints), keep, ints)


def feathered(mask: Mask, grid: tuple[int, int], size: int, radius: float) -> np.ndarray:
    """Float32 (size, size) weights in [0, 1] for pasting a processed crop back.

    Starts from the mask on ``grid`` (the cells the method may change) upsampled to the crop,
    grows it by ``radius`` pixels and blurs the edge over another ``radius`` pixels, so the
    whole changed region is pasted and the seam is soft.
    """
    import cv2

    cells = mask.grid(*grid).astype(np.uint8)
    region = cv2.resize(cells, (size, size), interpolation=cv2.INTER_NEAREST)
    r = max(1, round(radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    grown = cv2.dilate(region, kernel).astype(np.float32)
    soft = cv2.GaussianBlur(grown, (0, 0), sigmaX=r / 2)
    return np.clip(np.maximum(soft, region.astype(np.float32)), 0.0, 1.0)
