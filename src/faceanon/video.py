"""Videos: every face in every frame found, tracked, anonymized (or restored); the sound kept.

Streaming: frames are decoded, detected and tracked one by one, held only until no later
detection can still fill a gap before them (``MAX_GAP`` frames), transformed ``CHUNK`` frames
at a time (their faces batched across frames) and encoded; memory does not grow with the
video's length (docs/benchmarks.md "Video").

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

Outputs keep the input's frame timing (every frame's timestamp, so variable frame rates too),
size, rotation and colour description; the audio and subtitle streams are copied as they are
(``audio=False`` drops the audio). ``keyflip`` writes a lossless video (FFV1 on RGB in Matroska:
a lossy codec would change the anonymized faces and the restore would fail) and everything the
restore needs except the key as a Matroska attachment ``faceanon.json``: per frame the photo
metadata of faceanon/container.py (face polygons sealed under the key). The classic methods
write H.264 (CRF 18) in the input's container (MP4, MOV or Matroska; others become Matroska).

Outputs are written to a temporary file beside the target and given its name only when
complete; a stream that breaks mid-file keeps the frames decoded before the break and says
where it broke.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from faceanon.errors import (
    FaceanonError,
    MetadataError,
    OutputExistsError,
    VideoError,
    first_line,
)

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.container import Box
    from faceanon.keys import SecretKey

_reason = partial(first_line, typed=False)  # an error's first line, for "(...)" in messages

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
ATTACHMENT = "faceanon.json"
ATTACHMENT_MIME = "application/x-faceanon+json"
DOCUMENT_VERSION = 1
MAX_GAP = 10  # frames a track may go undetected and still be filled in (0.4 s at 25 fps)
HOLD = 3  # frames covered before a track's first detection and after its last
CHUNK = 8  # frames transformed together
MIN_IOU = 0.3
RECOVER_ANGLES = (45.0, -45.0)  # rolls searched around a track the frame's search missed
MAX_JUMP = (
    0.75  # a face found this many box sides from where its track was heading still continues it
)
MAX_DOCUMENT_BYTES = 512 * 2**20

Progress = Callable[[int, int | None, int], None]  # (frames done, frames in total, faces)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


H264_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")  # containers the classic methods write


def output_suffixes(method: str) -> tuple[str, ...]:
    """The names a video output may have: keyflip writes Matroska (lossless FFV1 and the
    metadata attachment); the classic methods H.264 in the container the name says."""
    return (".mkv",) if method == "keyflip" else H264_SUFFIXES


def output_suffix(src: Path, method: str) -> str:
    """``.mkv`` for keyflip (lossless FFV1); the input's container for the classic methods
    where it takes H.264 (mp4, mov, mkv), else ``.mkv``."""
    suffix = src.suffix.lower()
    return suffix if suffix in output_suffixes(method) else ".mkv"


def open_video(path: Path) -> Any:
    """The input container, or one line: not found, not a video, no video stream."""
    import av

    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


# --- tracking ---------------------------------------------------------------------------------


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


def _usable(box: Box, width: int, height: int) -> bool:
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


# --- reading and writing ------------------------------------------------------------------


@dataclass
class Frame:
    index: int
    rgb: np.ndarray
    pts: int | None
    time_base: Fraction | None
    rotation: int = 0  # the display rotation the container asks for (degrees)


@dataclass
class Summary:
    frames: int = 0
    faces: int = 0  # face-frames processed
    tracks: int = 0
    filled: int = 0  # face-frames given an interpolated box
    held: int = 0  # face-frames covered before a track's first or after its last detection
    recovered: int = 0  # faces found by the turned search around a track
    broke: str | None = None  # where and why decoding stopped early
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    written: bool = True  # False: no face in any frame, and nothing written


def _frames(container: Any, summary: Summary, copy: Callable[[Any], None]) -> Iterator[Frame]:
    """Decoded frames as RGB, in presentation order; the other streams' packets go to ``copy``.
    A broken stream ends the frames and is noted in ``summary.broke``."""
    import av

    video = container.streams.video[0]
    others = [s for s in container.streams if s.type in ("audio", "subtitle")]
    index = 0
    try:
        for packet in container.demux(video, *others):
            if packet.stream.type != "video":
                copy(packet)
                continue
            for frame in packet.decode():
                rgb = frame.to_ndarray(format="rgb24")
                rotation = int(getattr(frame, "rotation", 0) or 0)
                yield Frame(index, rgb, frame.pts, frame.time_base, rotation)
                index += 1
    except (av.FFmpegError, ValueError) as exc:
        summary.broke = f"the stream breaks after frame {index}: {_reason(exc)}"


class Writer:
    """An output video: the video stream re-encoded, the input's audio/subtitles copied."""

    def __init__(
        self, path: Path, source: Any, *, lossless: bool, audio: bool, matroska: bool = False
    ) -> None:
        import av

        self.path = path
        self.container = av.open(str(path), "w", format="matroska" if matroska else None)
        vin = source.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        codec = "ffv1" if lossless else "libx264"
        self.video: Any = cast(Any, self.container.add_stream(codec, rate=rate))
        self.video.width, self.video.height = vin.codec_context.width, vin.codec_context.height
        self.video.time_base = vin.time_base
        self.lossless, self.started = lossless, False
        # H.264 4:2:0 needs an even width and height; 4:4:4 takes any (fewer players play it).
        odd = vin.codec_context.width % 2 or vin.codec_context.height % 2
        self.yuv = "yuv444p" if odd else "yuv420p"
        if lossless:
            self.video.pix_fmt = "bgr0"  # RGB, exactly: what the restore reads back
        else:
            self.video.pix_fmt = self.yuv
            self.video.options = {"crf": "18", "preset": "medium"}
            for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
                value = getattr(vin.codec_context, name, None)
                if value:
                    setattr(self.video.codec_context, name, value)
            # The RGB frames go back to YUV with the input's matrix and range (decoding used
            # them), not the converter's default, so colours come out as they went in.
            self.colorspace = vin.codec_context.colorspace or None
            self.color_range = vin.codec_context.color_range or None
        self.copies: dict[int, Any] = {}
        self.dropped: list[str] = []
        for stream in source.streams:
            if stream.type not in ("audio", "subtitle") or (stream.type == "audio" and not audio):
                continue
            try:
                self.copies[stream.index] = self.container.add_stream_from_template(stream)
            except (av.FFmpegError, ValueError) as exc:
                self.dropped.append(f"{stream.type} stream {stream.index} ({_reason(exc)})")

    def copy(self, packet: Any) -> None:
        target = self.copies.get(packet.stream.index)
        if target is None or packet.size == 0:  # not copied, or the end-of-stream marker
            return
        packet.stream = target
        self.container.mux(packet)

    def write(self, rgb: np.ndarray, like: Frame) -> None:
        """``rgb`` as the frame ``like`` was: its timestamp and display rotation."""
        import av

        if not self.started and like.rotation:
            self.video.set_display_rotation(like.rotation)
        self.started = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if not self.lossless:
            frame = frame.reformat(
                format=self.yuv,
                dst_colorspace=self.colorspace,
                dst_color_range=self.color_range,
            )
        frame.pts, frame.time_base = like.pts, like.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.video.encode():
            self.container.mux(packet)
        self.container.close()


def _temporary(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}-", suffix=dst.suffix)
    os.close(fd)
    return Path(name)


def _publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    from faceanon.io import publish_exclusive

    os.chmod(tmp, 0o644)
    try:
        if overwrite:
            os.replace(tmp, dst)
        else:
            publish_exclusive(str(tmp), dst)
    except FileExistsError:
        raise OutputExistsError(f"{dst}: already exists (pass --overwrite to replace it)") from None


def _with_attachment(video: Path, data: bytes, dst: Path) -> None:
    """Copy every stream of ``video`` into ``dst`` with ``data`` attached (Matroska writes
    attachments in its header, so they are added once everything is known)."""
    import av

    with av.open(str(video)) as source, av.open(str(dst), "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        out.add_attachment(ATTACHMENT, ATTACHMENT_MIME, data)
        for packet in source.demux():
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


# --- anonymize ----------------------------------------------------------------------------


def detect(finder: Any, frame: Frame) -> list[Any]:
    """The faces of a frame: searched as the frame is displayed (its rotation applied), and,
    with ``finder.sideways``, only if none is found there, in the two quarter turns (a photo
    searches all three at once and keeps turned-only faces only without an upright one: the
    same faces, for a third of the detector calls in frames that show a face)."""
    from faceanon.faces.detect import detect_turned

    upright = (frame.rotation // 90) % 4
    found = detect_turned(finder.detector, frame.rgb, (upright,))
    if found or not finder.sideways:
        return found
    return detect_turned(finder.detector, frame.rgb, ((upright + 1) % 4, (upright + 3) % 4))


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


def anonymize_video(
    src: Path,
    dst: Path,
    method: str,
    finder: Any,
    *,
    anonymizer: Anonymizer | None = None,
    key: SecretKey | None = None,
    batch_size: int = 1,
    audio: bool = True,
    overwrite: bool = False,
    write_faceless: bool = False,
    lossy: bool = False,
    max_gap: int = MAX_GAP,
    hold: int = HOLD,
    recovery: bool = True,
    progress: Progress | None = None,
) -> Summary:
    """Every tracked face of ``src`` anonymized by ``method`` into ``dst`` (see the module).
    A video without a face in any frame is not written unless ``write_faceless``. ``lossy``:
    keyflip writes H.264 (CRF 18) instead of FFV1, smaller, and the restore less accurate.
    ``max_gap`` and ``hold`` 0 and ``recovery`` False: each frame only its own detections
    (benchmarks)."""
    from faceanon import photos

    started = time.monotonic()
    summary = Summary()
    reversible = method == "keyflip"
    source = open_video(src)
    total = source.streams.video[0].frames or None
    if anonymizer is not None:
        make_nonce: Callable[[], bytes | None] = lambda: anonymizer.new_nonces(1)[0]  # noqa: E731
    else:
        make_nonce = lambda: None  # noqa: E731
    tracker = Tracker(make_nonce, max_gap, hold)
    pending: deque[Frame] = deque()
    records: list[str | None] = []
    tmp = _temporary(dst)
    writer: Writer | None = None
    try:
        writer = Writer(
            tmp, source, lossless=reversible and not lossy, audio=audio, matroska=reversible
        )
        summary.notes += [f"warning: {src}: dropped {d}" for d in writer.dropped]
        if not writer.lossless and writer.yuv != "yuv420p":
            summary.notes.append(
                f"warning: {dst}: odd width or height, written as H.264 4:4:4 (4:2:0 needs even"
                " ones); some players, browsers among them, cannot play it"
            )
        if reversible and lossy:
            summary.notes.append(
                f"warning: {dst}: lossy H.264 changes the anonymized faces a little; their"
                ' restore will be less accurate (docs/benchmarks.md "Video")'
            )
        depth = source.streams.video[0].codec_context.pix_fmt or ""
        if any(bits in depth for bits in ("10", "12", "16")):
            summary.notes.append(f"warning: {src}: {depth} input is written with 8 bits")

        def emit(chunk: list[Frame]) -> None:
            assert writer is not None
            faces, nonces = [], []
            for f in chunk:
                height, width = f.rgb.shape[:2]
                found = [fb for fb in tracker.faces(f.index) if _usable(fb[1], width, height)]
                at = [(t, finder.at(f.rgb, box, turns)) for t, box, turns in found]
                faces.append(
                    [track_region(t, face, f.rgb.shape) if reversible else face for t, face in at]
                )
                nonces.append([t.nonce for t, _, _ in found])
            outcomes = photos.anonymize(
                [f.rgb for f in chunk],
                faces,
                method,
                anonymizer=anonymizer,
                key=key,
                batch_size=batch_size,
                nonces=nonces,
            )
            for f, outcome, found_faces in zip(chunk, outcomes, faces, strict=True):
                writer.write(outcome.image, f)
                records.append(outcome.metadata if found_faces else None)
                summary.faces += len(found_faces)
            summary.frames += len(chunk)
            if progress is not None:
                progress(summary.frames, total, summary.faces)

        for frame in _frames(source, summary, writer.copy):
            found = [(d.box, d.turns) for d in detect(finder, frame)]
            if recovery:
                extra = recover(finder, frame, tracker.expected(frame.index), [b for b, _ in found])
                summary.recovered += len(extra)
                found += [(b, (frame.rotation // 90) % 4) for b in extra]
            for track in tracker.update(frame.index, found):
                if recovery:  # a face that comes in rolled is often found only later
                    summary.recovered += look_back(finder, tracker, track, pending)
            pending.append(frame)
            while len(pending) >= max_gap + 1 + CHUNK:
                emit([pending.popleft() for _ in range(CHUNK)])
                tracker.forget(pending[0].index)
        while pending:
            emit([pending.popleft() for _ in range(min(CHUNK, len(pending)))])
        writer.close()
        writer = None
        summary.tracks = tracker.count
        summary.filled, summary.held = tracker.filled, tracker.held
        if total and summary.frames < total and summary.broke is None:
            summary.broke = f"the stream ends after frame {summary.frames} of {total} (truncated?)"
        if summary.frames == 0:
            raise VideoError(f"{src}: no frame could be decoded ({summary.broke or 'empty'})")
        if summary.faces == 0 and not write_faceless:
            summary.written = False
        elif reversible:
            document = {
                "faceanon_video": DOCUMENT_VERSION,
                "frames": summary.frames,
                "metadata": records,
            }
            final = _temporary(dst)
            try:
                _with_attachment(tmp, json.dumps(document, separators=(",", ":")).encode(), final)
                _publish(final, dst, overwrite)
            finally:
                final.unlink(missing_ok=True)
        else:
            _publish(tmp, dst, overwrite)
    except FaceanonError:
        raise
    except Exception as exc:  # PyAV's and the encoders' errors: one line naming the file
        raise VideoError(f"{dst}: cannot write the video ({_reason(exc)})") from None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):  # already failing: report the first error
                writer.container.close()
        source.close()
        tmp.unlink(missing_ok=True)
    summary.seconds = time.monotonic() - started
    return summary


def track_region(track: Track, face: Any, shape: tuple[int, ...]) -> Any:
    """``face`` (a :class:`faceanon.pipeline.Face`, in a frame of ``shape``) with its track's
    region: the region its first frame replaces (grown over its box), on the crop's
    ``KEEP_GRID`` cells, the same in every frame, so a track keeps one keyed transform (``mix``
    depends on the masked cells) and one anonymized identity. Where it covers less than
    ``COVERED`` of a frame's box (the face turned), it grows by that frame's region from there
    on. It is stored in the clear as kept cells (like a parser's: nothing is sealed); a face
    parser's occluders of each frame are kept as well."""
    from dataclasses import replace

    from faceanon.container import Geometry, cover_box
    from faceanon.masks import KEEP_GRID, FaceMask, public_outline
    from faceanon.pipeline import COVERED, box_coverage

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


# --- deanonymize --------------------------------------------------------------------------


def read_document(path: Path, container: Any) -> list[str | None]:
    """The per-frame metadata of an anonymized video, checked."""
    attachment = next(
        (s for s in container.streams if s.type == "attachment" and s.name == ATTACHMENT), None
    )
    if attachment is None:
        raise MetadataError(
            f"{path}: no faceanon metadata in this video (stripped, re-encoded, or not made by"
            " faceanon anonymize --method keyflip)"
        )
    data = bytes(attachment.data)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MetadataError(f"{path}: faceanon metadata too large ({len(data)} bytes)")
    try:
        document = json.loads(data)
        if document.get("faceanon_video") != DOCUMENT_VERSION:
            raise ValueError("unknown version")
        records = document["metadata"]
        if not isinstance(records, list) or not all(
            r is None or isinstance(r, str) for r in records
        ):
            raise ValueError("metadata is not a list of texts")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MetadataError(f"{path}: faceanon metadata is damaged ({_reason(exc)})") from None
    return records


def deanonymize_video(
    src: Path,
    dst: Path,
    key: SecretKey,
    backbone_for: Callable[[Path, Any], Backbone],
    finder_for: Callable[[int], Any],
    *,
    batch_size: int = 1,
    audio: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """The faces of a video made by :func:`anonymize_video` with keyflip restored by ``key``
    (lossless FFV1 output). ``backbone_for(path, metadata)`` loads the model a frame names."""
    from faceanon import photos

    started = time.monotonic()
    summary = Summary()
    source = open_video(src)
    tmp = _temporary(dst)
    writer: Writer | None = None
    try:
        records = read_document(src, source)
        total = len(records)
        writer = Writer(tmp, source, lossless=True, audio=audio, matroska=True)
        batch: list[tuple[Frame, Any]] = []

        def flush() -> None:
            assert writer is not None
            work = [(f, m) for f, m in batch if m is not None]
            restored: dict[int, np.ndarray] = {}
            if work:
                items = []
                for f, meta in work:
                    backbone = backbone_for(src, meta)
                    size = backbone.image_size
                    name = f"{src} frame {f.index}"
                    meta, geometry = photos.restore_geometry(
                        name, f.rgb, meta, key, size, partial(finder_for, size)
                    )
                    items.append((f.rgb, meta, backbone, geometry))
                    summary.faces += len(geometry)
                outs = photos.restore(items, key, batch_size=batch_size)
                restored = {f.index: o.image for (f, _), o in zip(work, outs, strict=True)}
            for f, _ in batch:
                writer.write(restored.get(f.index, f.rgb), f)
            summary.frames += len(batch)
            batch.clear()
            if progress is not None:
                progress(summary.frames, total, summary.faces)

        for frame in _frames(source, summary, writer.copy):
            if frame.index >= len(records):
                raise MetadataError(f"{src}: more frames than its metadata describes (edited?)")
            text = records[frame.index]
            meta = (
                None if text is None else photos.read_metadata(f"{src} frame {frame.index}", text)
            )
            batch.append((frame, meta))
            if len(batch) >= CHUNK:
                flush()
        flush()
        writer.close()
        writer = None
        if summary.frames == 0:
            raise VideoError(f"{src}: no frame could be decoded ({summary.broke or 'empty'})")
        if summary.frames < len(records) and summary.broke is None:
            summary.notes.append(
                f"warning: {src}: {len(records) - summary.frames} frames fewer than anonymized"
                " (cut?)"
            )
        _publish(tmp, dst, overwrite)
    except FaceanonError:
        raise
    except Exception as exc:
        raise VideoError(f"{dst}: cannot write the video ({_reason(exc)})") from None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.container.close()
        source.close()
        tmp.unlink(missing_ok=True)
    summary.seconds = time.monotonic() - started
    return summary
