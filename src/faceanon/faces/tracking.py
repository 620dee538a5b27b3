"""Faces followed from frame to frame in a video (:mod:`faceanon.media.video` runs it).

Tracking: detections are linked to the track whose box, moved on as it last moved, overlaps
most (IoU; failing that, the nearest centre within 0.75 box sides; greedy); a track not
detected for up to ``MAX_GAP`` frames and then found again gets the boxes in between by linear
interpolation, so no frame shows the face bare between two detections; every box is smoothed
over its neighbours (3 frames); where a live track is not found, the region it is heading to is
searched again turned by +-45 degrees (faces rolled that far), and a new track is followed back
through the frames not yet written the same way; a track's first box also covers
the ``HOLD`` frames before it, and its last box, moved on, the ``HOLD`` frames after it. With
``keyflip`` each track has one nonce and one region (its first frame's, grown only where it
no longer covers the face's box; in the clear: :func:`track_region`), so its keyed transform,
``mix`` too, stays the same from frame to frame and the person keeps one anonymized face
(README "Videos").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faceanon.media.codec import Frame
    from faceanon.secure.container import Box

MAX_GAP = 10  # frames a track may go undetected and still be filled in (0.4 s at 25 fps)
HOLD = 3  # frames covered before a track's first detection and after its last
MIN_IOU = 0.3
RECOVER_ANGLES = (45.0, -45.0)  # rolls searched around a track the frame's search missed
MAX_JUMP = (
    0.75  # a face found this many box sides from where its track was heading still continues it
)


def _affinity(predicted: Box, box: Box) -> float:
    """How well a detection continues a track: above 1 for an overlap (1 + IoU >= MIN_IOU),
    else up to 1 for a centre within MAX_JUMP box sides of the prediction, else 0."""
    overlap = _iou(predicted, box)
    if overlap >= MIN_IOU:
        return 1.0 + overlap
    side = ((predicted[2] - predicted[0]) + (box[2] - box[0])) / 2
    dx = (predicted[0] + predicted[2] - box[0] - box[2]) / 2
    dy = (predicted[1] + predicted[3] - box[1] - box[3]) / 2
    jump = float(np.hypot(dx, dy)) / max(side, 1e-6)
    return max(0.0, 1.0 - jump / MAX_JUMP)


def usable(box: Box, width: int, height: int) -> bool:
    """A box (a held one may drift) that is not empty and lies mostly inside the frame."""
    x0, y0, x1, y1 = box
    if not (x1 - x0 > 4 and y1 - y0 > 4):
        return False
    inside = max(0.0, min(x1, width) - max(x0, 0)) * max(0.0, min(y1, height) - max(y0, 0))
    return inside >= 0.25 * (x1 - x0) * (y1 - y0)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    nonce: bytes | None
    boxes: dict[int, Box] = field(default_factory=dict)
    turns: dict[int, int] = field(default_factory=dict)
    last: int = -1
    first: int = -1
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # box change per frame
    keep: np.ndarray | None = None  # keyflip: the cells of the crop its region leaves, fixed

    def predict(self, index: int) -> Box:
        """Where the box should be in frame ``index``, moving as it last moved."""
        steps = index - self.last
        box = self.boxes[self.last]
        return tuple(b + steps * v for b, v in zip(box, self.velocity, strict=True))  # type: ignore[return-value]


class Tracker:
    """IoU tracking with gap filling; boxes of frames already emitted are forgotten."""

    def __init__(
        self, new_nonce: Callable[[], bytes | None], max_gap: int = MAX_GAP, hold: int = HOLD
    ) -> None:
        self.new_nonce, self.max_gap, self.hold = new_nonce, max_gap, hold
        self.tracks: list[Track] = []
        self.count = 0  # tracks started
        self.filled = 0  # face-frames given an interpolated box
        self.held = 0  # face-frames covered just before a track starts or after it ends

    def update(self, index: int, detections: Sequence[tuple[Box, int]]) -> list[Track]:
        """Link frame ``index``'s detections to the tracks; the tracks it starts."""
        live = [t for t in self.tracks if index - t.last <= self.max_gap + 1]
        pairs = sorted(
            (
                (_affinity(t.predict(index), box), ti, di)
                for ti, t in enumerate(live)
                for di, (box, _) in enumerate(detections)
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        for affinity, ti, di in pairs:
            if affinity <= 0 or ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._extend(live[ti], index, *detections[di])
        started = []
        for di, (box, turns) in enumerate(detections):
            if di not in used_d:
                track = Track(self.count, self.new_nonce())
                self.count += 1
                self._extend(track, index, box, turns)
                self.tracks.append(track)
                started.append(track)
        return started

    @staticmethod
    def prepend(track: Track, index: int, box: Box, turns: int) -> None:
        """Frame ``index``, just before the track's first, found to hold its face too."""
        track.boxes[index], track.turns[index], track.first = box, turns, index

    def _extend(self, track: Track, index: int, box: Box, turns: int) -> None:
        if track.last < 0:
            track.first = index
        if track.last >= 0:
            gap, start = index - track.last, track.boxes[track.last]
            track.velocity = tuple((b - a) / gap for a, b in zip(start, box, strict=True))  # type: ignore[assignment]
        if track.last >= 0 and index - track.last > 1:  # a gap: interpolate the boxes
            start, gap = track.boxes[track.last], index - track.last
            for k in range(1, gap):
                w = k / gap
                track.boxes[track.last + k] = tuple(  # type: ignore[assignment]
                    (1 - w) * a + w * b for a, b in zip(start, box, strict=True)
                )
                track.turns[track.last + k] = turns
                self.filled += 1
        track.boxes[index], track.turns[index], track.last = box, turns, index

    def expected(self, index: int) -> list[Box]:
        """Where the live tracks should be in frame ``index`` (before its detections)."""
        return [t.predict(index) for t in self.tracks if 0 < index - t.last <= self.max_gap + 1]

    def faces(self, index: int) -> list[tuple[Track, Box, int]]:
        """The tracks with a box in frame ``index``, each box averaged with its neighbours';
        and, for ``HOLD`` frames before a track's first detection and after its last, the
        first box and the last one moved on (a face is often missed as it comes and goes).
        Call it once per frame, in order: it counts the frames held."""
        out = []
        for t in self.tracks:
            if index in t.boxes:
                near = [t.boxes[j] for j in (index - 1, index, index + 1) if j in t.boxes]
                box = tuple(float(np.mean([b[i] for b in near])) for i in range(4))
                out.append((t, box, t.turns[index]))
            elif t.first - self.hold <= index < t.first:
                out.append((t, t.boxes[t.first], t.turns[t.first]))
                self.held += 1
            elif t.last < index <= t.last + self.hold:
                out.append((t, t.predict(index), t.turns[t.last]))
                self.held += 1
        return out  # type: ignore[return-value]

    def forget(self, before: int) -> None:
        """Drop the boxes of frames before ``before - 1`` (kept: one for smoothing) and the
        tracks that can no longer be extended."""
        for t in self.tracks:
            for j in [j for j in t.boxes if j < before - 1 and j != t.last]:
                del t.boxes[j], t.turns[j]
        horizon = before - max(self.max_gap, self.hold) - 1
        self.tracks = [t for t in self.tracks if t.last >= horizon]


def detect(finder: Any, frame: Frame, full: bool = True) -> list[Any]:
    """The faces of a frame: searched as the frame is displayed (its rotation applied), and,
    with ``finder.sideways``, only if none is found there, in the two quarter turns (a photo
    searches all three at once and keeps turned-only faces only without an upright one: the
    same faces, for a third of the detector calls in frames that show a face). ``full``
    False: with ``--recall high``, the photo as is only (see :func:`full_search`)."""
    from faceanon.faces.detect import detect_turned

    detector = finder.detector if full else getattr(finder.detector, "base", finder.detector)
    upright = (frame.rotation // 90) % 4
    found = detect_turned(detector, frame.rgb, (upright,))
    if found or not finder.sideways:
        return found
    return detect_turned(detector, frame.rgb, ((upright + 1) % 4, (upright + 3) % 4))


def full_search(index: int, hold: int) -> bool:
    """Whether frame ``index`` gets the whole ``--recall`` search (mirror-framed and enlarged
    views too): every ``hold + 1`` frames, so a face that only those views find (cut by the
    border, or tiny) is found at most ``hold`` frames late, and those frames are covered by
    the hold before a track's first detection; the frames between get the photo as is, and
    the whole search as well when it finds fewer faces than there are live tracks."""
    return index % (hold + 1) == 0


def recover(finder: Any, frame: Frame, expected: Sequence[Box], found: Sequence[Box]) -> list[Box]:
    """Faces of tracks that the frame's search missed, looked for where each track is heading
    in a crop turned by +-45 degrees (the detector misses faces rolled that far; the search
    of the whole frame turns it only by quarter turns). Only near live tracks: cheap."""
    import cv2

    out: list[Box] = []
    for box in expected:
        if any(_affinity(box, b) > 0 for b in [*found, *out]):
            continue
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = 2.2 * max(x1 - x0, y1 - y0, 8.0)
        size = int(min(max(side, 96), 640))
        for angle in RECOVER_ANGLES:
            turn = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
            turn[:, 2] += np.array([size / 2 - cx, size / 2 - cy])
            crop = cv2.warpAffine(frame.rgb, turn, (size, size), borderValue=(0, 0, 0))
            hits = finder.detector.detect(crop)
            if not hits:
                continue
            best = max(hits, key=lambda d: d.score)
            bx0, by0, bx1, by1 = best.box
            corners = np.array([[bx0, by0, 1], [bx1, by0, 1], [bx1, by1, 1], [bx0, by1, 1]])
            back = corners @ cv2.invertAffineTransform(turn).T
            (ax0, ay0), (ax1, ay1) = back.min(axis=0), back.max(axis=0)
            candidate = (float(ax0), float(ay0), float(ax1), float(ay1))
            if _affinity(box, candidate) > 0:
                out.append(candidate)
                break
    return out


def look_back(finder: Any, tracker: Tracker, track: Track, pending: Sequence[Frame]) -> int:
    """Extend a new track backwards through the frames not yet written, while the turned
    search around its box finds the face; the frames it was found in."""
    found = 0
    for frame in reversed(pending):
        if frame.index != track.first - 1:
            break
        hits = recover(finder, frame, [track.boxes[track.first]], [])
        if not hits:
            break
        tracker.prepend(track, frame.index, hits[0], (frame.rotation // 90) % 4)
        found += 1
    return found


def track_region(track: Track, face: Any, shape: tuple[int, ...]) -> Any:
    """``face`` (a :class:`faceanon.faces.finder.Face`, in a frame of ``shape``) with its track's
    region: the region its first frame replaces (grown over its box), on the crop's
    ``KEEP_GRID`` cells, the same in every frame, so a track keeps one keyed transform (``mix``
    depends on the masked cells) and one anonymized identity. Where it covers less than
    ``COVERED`` of a frame's box (the face turned), it grows by that frame's region from there
    on. It is stored in the clear as kept cells (like a parser's: nothing is sealed); a face
    parser's occluders of each frame are kept as well."""
    from dataclasses import replace

    from faceanon.faces.masks import KEEP_GRID, FaceMask, public_outline
    from faceanon.faces.replace import COVERED, box_coverage
    from faceanon.secure.container import Geometry, cover_box

    g = face.geometry
    size = g.alignment.size
    if size % KEEP_GRID:
        return face
    own = ~cover_box(g, face.box).mask.grid(KEEP_GRID, KEEP_GRID)  # this frame's kept cells
    if track.keep is None:
        track.keep = own
    fixed = Geometry(g.alignment, FaceMask(public_outline(size, track.keep, None), track.keep))
    if box_coverage(fixed, face.box, shape, (KEEP_GRID, KEEP_GRID)) < COVERED:
        track.keep = track.keep & own
    keep, points = track.keep, None
    if isinstance(g.mask, FaceMask):
        points = g.mask.points
        keep = keep if g.mask.keep is None else keep | g.mask.keep
    mask = FaceMask(public_outline(size, keep, points), keep, points)
    return replace(face, geometry=Geometry(g.alignment, mask))
