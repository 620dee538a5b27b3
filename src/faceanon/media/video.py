"""Videos: every face in every frame found, tracked, anonymized (or restored); the sound kept.

Streaming: frames are decoded, detected and tracked one by one, held only until no later
detection can still fill a gap before them (``MAX_GAP`` frames), transformed ``CHUNK`` frames
at a time (their faces batched across frames) and encoded; memory does not grow with the
video's length (docs/benchmarks.md "Video").

Tracking (:mod:`faceanon.faces.tracking`): faces are linked from frame to frame, gaps filled,
and each track keeps one nonce and one region, so the person keeps one anonymized face.

Outputs keep the input's frame timing (every frame's timestamp, so variable frame rates too),
size, rotation and colour description; the audio and subtitle streams are copied as they are
(``audio=False`` drops the audio). Every method writes H.264 (CRF 18) in the output's
container (by default the input's: MP4, MOV or Matroska; others become Matroska), or with
``lossless`` FFV1 on RGB in Matroska. ``keyflip`` adds everything the restore needs except the
key (:mod:`faceanon.media.codec`: a Matroska attachment or an MP4 box): per frame the photo
metadata of faceanon/secure/container.py (face polygons sealed under the key) and, in an H.264
file (and for a grey video's frames, whose faces are shown grey), each face-frame's exact
latent (:mod:`faceanon.media.latents`, computed from the frames as they decode), so the
restore does not depend on the pixels. The restore writes FFV1
into a ``.mkv`` name, H.264 into the others.

Outputs are written to a temporary file beside the target and given its name only when
complete; a stream that breaks mid-file keeps the frames decoded before the break and says
where it broke.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.errors import (
    FaceanonError,
    MetadataError,
    VideoError,
    first_line,
)
from faceanon.faces.tracking import (
    HOLD,
    MAX_GAP,
    Tracker,
    detect,
    full_search,
    look_back,
    recover,
    track_region,
    usable,
)
from faceanon.media import latents
from faceanon.media.codec import (
    MATROSKA_SUFFIXES,
    Frame,
    Writer,
    add_document,
    exact_data,
    frames,
    make_document,
    open_video,
    publish,
    read_document,
    temporary,
)
from faceanon.media.io import exact_data_need

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.media.latents import ExactFaces
    from faceanon.secure.keys import SecretKey

_reason = partial(first_line, typed=False)  # an error's first line, for "(...)" in messages

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
CHUNK = 8  # frames transformed together

Progress = Callable[[int, int | None, int], None]  # (frames done, frames in total, faces)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


H264_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")  # containers H.264 outputs are written in


def output_suffixes(lossless: bool = False) -> tuple[str, ...]:
    """The names a video output may have: H.264 in the container the name says, lossless
    FFV1 only in Matroska."""
    return MATROSKA_SUFFIXES if lossless else H264_SUFFIXES


def output_suffix(src: Path, lossless: bool = False) -> str:
    """The input's container where it takes H.264 (mp4, mov, mkv, m4v), else ``.mkv``; lossless
    outputs: ``.mkv``."""
    suffix = src.suffix.lower()
    return suffix if suffix in output_suffixes(lossless) else ".mkv"


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


# --- anonymize ----------------------------------------------------------------------------


def anonymize_video(
    src: Path,
    dst: Path,
    method: str,
    finder: Any,
    *,
    anonymizer: Anonymizer | None = None,
    key: SecretKey | None = None,
    batch_size: int = CHUNK,
    audio: bool = True,
    overwrite: bool = False,
    write_faceless: bool = False,
    lossless: bool = False,
    crf: int = 18,
    max_gap: int = MAX_GAP,
    hold: int = HOLD,
    recovery: bool = True,
    progress: Progress | None = None,
) -> Summary:
    """Every tracked face of ``src`` anonymized by ``method`` into ``dst`` (see the module).
    A video without a face in any frame is not written unless ``write_faceless``. H.264 at
    ``crf`` (0-51, lower is better), keyflip's with the faces' exact latents; ``lossless``:
    FFV1 (``dst`` must be a ``.mkv``), about 10x larger.
    ``max_gap`` and ``hold`` 0 and ``recovery`` False: each frame only its own detections
    (benchmarks)."""
    from faceanon.media import photos
    from faceanon.methods.display import Steady

    if method == "hide":
        raise FaceanonError(f"{src}: --method hide is for photos; videos: keyflip")
    if dst.suffix.lower() not in output_suffixes(lossless):
        raise FaceanonError(
            f"{dst}: {'lossless ' if lossless else ''}videos are written as"
            f" {' or '.join(output_suffixes(lossless))}"
        )
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
    # the embedded models' faces are shown steadied along each track (methods.display)
    steady = None
    if reversible and anonymizer is not None and anonymizer.display is not None:
        steady = Steady()
    pending: deque[Frame] = deque()
    records: list[str | None] = []
    exact: list[ExactFaces | None] = []  # lossy keyflip: per frame
    tmp = temporary(dst)
    writer: Writer | None = None
    try:
        writer = Writer(tmp, source, lossless=lossless, audio=audio, crf=crf)
        summary.notes += [f"warning: {src}: dropped {d}" for d in writer.dropped]
        if not writer.lossless and writer.yuv != "yuv420p":
            summary.notes.append(
                f"warning: {dst}: odd width or height, written as H.264 4:4:4 (4:2:0 needs even"
                " ones); some players, browsers among them, cannot play it"
            )

        depth = source.streams.video[0].codec_context.pix_fmt or ""
        if any(bits in depth for bits in ("10", "12", "16")):
            summary.notes.append(f"warning: {src}: {depth} input is written with 8 bits")

        def emit(chunk: list[Frame]) -> None:
            assert writer is not None
            faces, nonces = [], []
            for f in chunk:
                height, width = f.rgb.shape[:2]
                found = [fb for fb in tracker.faces(f.index) if usable(fb[1], width, height)]
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
                steady=steady,
            )
            if steady is not None:
                steady.keep({n for frame_nonces in nonces for n in frame_nonces})
            for f, outcome, found_faces in zip(chunk, outcomes, faces, strict=True):
                writer.write(outcome.image, f)
                records.append(outcome.metadata if found_faces else None)
                summary.faces += len(found_faces)
                if reversible:  # what the restore needs of the faces, exactly, where it does
                    assert anonymizer is not None and outcome.metadata is not None
                    exact_image = outcome.exact_image
                    needed = found_faces and (not lossless or exact_image is not None)
                    exact.append(
                        latents.ExactFaces.of(
                            anonymizer,
                            outcome.image if exact_image is None else exact_image,
                            outcome.geometry,
                            outcome.metadata,
                        )
                        if needed
                        else None
                    )
            summary.frames += len(chunk)
            if progress is not None:
                progress(summary.frames, total, summary.faces)

        for frame in frames(source, summary, writer.copy):
            full = full_search(frame.index, hold)
            searched = detect(finder, frame, full)
            if not full and len(searched) < len(tracker.expected(frame.index)):
                searched = detect(finder, frame)  # a track may be lost: look everywhere
            found = [(d.box, d.turns) for d in searched]
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
            needed = any(e is not None for e in exact)  # H.264, or grey frames
            document = make_document(records, exact_data(tmp, exact) if needed else None, dst)
            final = add_document(tmp, document, dst)
            try:
                publish(final, dst, overwrite)
            finally:
                final.unlink(missing_ok=True)
        else:
            publish(tmp, dst, overwrite)
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


# --- deanonymize --------------------------------------------------------------------------


def deanonymize_video(
    src: Path,
    dst: Path,
    key: SecretKey,
    backbone_for: Callable[[Path, Any], Backbone],
    finder_for: Callable[[int], Any],
    *,
    batch_size: int = CHUNK,
    audio: bool = True,
    overwrite: bool = False,
    crf: int = 18,
    progress: Progress | None = None,
) -> Summary:
    """The faces of a video made by :func:`anonymize_video` with keyflip restored by ``key``
    into ``dst`` (FFV1 in a ``.mkv``, else H.264 at ``crf`` in the container the name says).
    ``backbone_for(path, metadata)`` loads the model a frame names."""
    from faceanon.media import photos

    started = time.monotonic()
    summary = Summary()
    source = open_video(src)
    tmp = temporary(dst)
    writer: Writer | None = None
    try:
        records, exact = read_document(src, source)
        total = len(records)
        lossy = source.streams.video[0].codec_context.name != "ffv1"
        if dst.suffix.lower() not in output_suffixes():
            raise FaceanonError(f"{dst}: videos are written as {' or '.join(output_suffixes())}")
        lossless = dst.suffix.lower() in MATROSKA_SUFFIXES
        writer = Writer(tmp, source, lossless=lossless, audio=audio, crf=crf)
        batch: list[tuple[Frame, Any]] = []

        def exact_faces(f: Frame, meta: Any, backbone: Backbone) -> Any:
            """The frame's exact face data, if the video carries it; the first problem noted."""
            text, blob = records[f.index], exact[f.index]
            assert text is not None
            name = f"{src} frame {f.index}"
            need = exact_data_need(meta.method, f.rgb, meta.display)
            residuals, note = latents.exact_faces(
                name, blob, lossy, text, len(meta.faces), backbone, need
            )
            if note is not None and not any("exact face data" in n for n in summary.notes):
                summary.notes.append(note)
            return residuals

        def flush() -> None:
            assert writer is not None
            work = [(f, m) for f, m in batch if m is not None]
            restored: dict[int, np.ndarray] = {}
            if work:
                items, residuals = [], []
                for f, meta in work:
                    backbone = backbone_for(src, meta)
                    size = backbone.image_size
                    name = f"{src} frame {f.index}"
                    meta, geometry = photos.restore_geometry(
                        name, f.rgb, meta, key, size, partial(finder_for, size)
                    )
                    items.append((f.rgb, meta, backbone, geometry))
                    residuals.append(exact_faces(f, meta, backbone))
                    summary.faces += len(geometry)
                outs = photos.restore(items, key, batch_size=batch_size, residuals=residuals)
                restored = {f.index: o.image for (f, _), o in zip(work, outs, strict=True)}
            for f, _ in batch:
                writer.write(restored.get(f.index, f.rgb), f)
            summary.frames += len(batch)
            batch.clear()
            if progress is not None:
                progress(summary.frames, total, summary.faces)

        for frame in frames(source, summary, writer.copy):
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
        publish(tmp, dst, overwrite)
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
