"""Video files: opened, decoded to RGB frames, encoded (FFV1 or H.264, the other streams
copied), published atomically, and the faceanon metadata document written and read back: a
Matroska attachment ``faceanon.json``, or in MP4/MOV a top-level ``uuid`` box of faceanon's
after the movie (ISO/IEC 14496-12 lets a file carry boxes a reader does not know, and readers
skip them). :mod:`faceanon.media.video` does the anonymizing on top."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from faceanon.errors import MetadataError, OutputExistsError, VideoError, first_line

if TYPE_CHECKING:
    from faceanon.media.latents import ExactFaces
    from faceanon.media.video import Summary

_reason = partial(first_line, typed=False)  # an error's first line, for "(...)" in messages

ATTACHMENT = "faceanon.json"
ATTACHMENT_MIME = "application/x-faceanon+json"
BOX_TYPE = b"uuid"
BOX_UUID = b"faceanon-json\0\0\1"  # the box's 16-byte extended type
MATROSKA_SUFFIXES = (".mkv",)
DOCUMENT_VERSION = 2  # 1: the exact face data as base64 texts in the JSON (still read)
MAX_DOCUMENT_BYTES = 512 * 2**20


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


@dataclass
class Frame:
    index: int
    rgb: np.ndarray
    pts: int | None
    time_base: Fraction | None
    rotation: int = 0  # the display rotation the container asks for (degrees)


def frames(container: Any, summary: Summary | None, copy: Callable[[Any], None]) -> Iterator[Frame]:
    """Decoded frames as RGB, in presentation order; the other streams' packets go to ``copy``.
    A broken stream ends the frames and is noted in ``summary.broke`` (if given)."""
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
        if summary is not None:
            summary.broke = f"the stream breaks after frame {index}: {_reason(exc)}"


class Writer:
    """An output video: the video stream re-encoded (FFV1, or H.264 at ``crf``), the input's
    audio/subtitles copied."""

    def __init__(
        self,
        path: Path,
        source: Any,
        *,
        lossless: bool,
        audio: bool,
        crf: int = 18,
    ) -> None:
        import av

        self.path = path
        matroska = path.suffix.lower() in MATROSKA_SUFFIXES
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
            self.video.options = {"crf": str(crf), "preset": "medium"}
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


def temporary(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}-", suffix=dst.suffix)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    from faceanon.media.io import publish_exclusive

    os.chmod(tmp, 0o644)
    try:
        if overwrite:
            os.replace(tmp, dst)
        else:
            publish_exclusive(str(tmp), dst)
    except FileExistsError:
        raise OutputExistsError(f"{dst}: already exists (pass --overwrite to replace it)") from None


def with_attachment(video: Path, data: bytes, dst: Path) -> None:
    """Copy every stream of ``video`` but its attachments into ``dst`` with ``data`` attached
    (Matroska writes attachments in its header, so they are added once everything is known)."""
    import av

    with av.open(str(video)) as source, av.open(str(dst), "w", format="matroska") as out:
        kept = [s for s in source.streams if s.type != "attachment"]
        streams = {s.index: out.add_stream_from_template(s) for s in kept}
        out.add_attachment(ATTACHMENT, ATTACHMENT_MIME, data)
        for packet in source.demux(*kept):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def add_document(video: Path, data: bytes, dst: Path) -> Path:
    """``video``, just written, with the metadata document ``data``, ready to be published as
    ``dst``: a Matroska copy with the attachment (a new temporary file beside ``dst``; the
    caller removes it), or for MP4/MOV ``video`` itself with faceanon's box appended."""
    if dst.suffix.lower() in MATROSKA_SUFFIXES:
        final = temporary(dst)
        with_attachment(video, data, final)
        return final
    size = 8 + len(BOX_UUID) + len(data)
    if size < 2**32:
        header = struct.pack(">I4s", size, BOX_TYPE)
    else:  # a 64-bit size
        header = struct.pack(">I4sQ", 1, BOX_TYPE, size + 8)
    with open(video, "ab") as handle:
        handle.write(header + BOX_UUID + data)
    return video


def read_box(path: Path) -> bytes | None:
    """The payload of faceanon's top-level ``uuid`` box of an MP4/MOV file, or None (none, or
    not an MP4: the walk stops at the first box that does not fit in the file)."""
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        at = 0
        while at + 8 <= end:
            handle.seek(at)
            head = handle.read(16 + len(BOX_UUID))
            size, kind = struct.unpack(">I4s", head[:8])
            start = 8
            if size == 1 and len(head) >= 16:
                size, start = struct.unpack(">Q", head[8:16])[0], 16
            elif size == 0:  # to the end of the file
                size = end - at
            if size < start or at + size > end:
                return None
            if kind == BOX_TYPE and head[start : start + len(BOX_UUID)] == BOX_UUID:
                length = size - start - len(BOX_UUID)
                if length > MAX_DOCUMENT_BYTES:
                    raise MetadataError(f"{path}: faceanon metadata too large ({length} bytes)")
                handle.seek(at + start + len(BOX_UUID))
                return handle.read(length)
            at += size
    return None


def make_document(
    records: list[str | None], exact: list[bytes | None] | None, name: object = "video"
) -> bytes:
    """The metadata document of a keyflip video: one JSON line (version, frame count, per frame
    the photo metadata and the byte length of its faces' exact data, or null), then those
    data, one after the other (binary: base64 would add a third). One line naming ``name``
    if it is larger than a reader takes."""
    document: dict[str, Any] = {
        "faceanon_video": DOCUMENT_VERSION,
        "frames": len(records),
        "metadata": records,
    }
    blobs = b""
    if exact is not None:
        document["latents"] = [None if e is None else len(e) for e in exact]
        blobs = b"".join(e for e in exact if e is not None)
    data = json.dumps(document, separators=(",", ":")).encode() + b"\n" + blobs
    if len(data) > MAX_DOCUMENT_BYTES:  # the reader would refuse it: say so before writing
        raise VideoError(
            f"{name}: the restore data would take {len(data) // 2**20} MiB, over the"
            f" {MAX_DOCUMENT_BYTES // 2**20} MiB one video may carry (about 4 kB a face-frame"
            " in H.264); cut the video into parts, or write it --lossless"
        )
    return data


def read_document(path: Path, container: Any) -> tuple[list[str | None], list[bytes | None]]:
    """The per-frame metadata of an anonymized video (its Matroska attachment or MP4 box),
    checked, and per frame its faces' exact data (:mod:`faceanon.media.latents`) where the
    video carries it (else all None)."""
    attachment = next(
        (s for s in container.streams if s.type == "attachment" and s.name == ATTACHMENT), None
    )
    data = bytes(attachment.data) if attachment is not None else read_box(path)
    if data is None:
        raise MetadataError(
            f"{path}: no faceanon metadata in this video (stripped, re-encoded, or not made by"
            " faceanon anonymize --method keyflip)"
        )
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MetadataError(f"{path}: faceanon metadata too large ({len(data)} bytes)")
    head, _, body = data.partition(b"\n")
    try:
        document = json.loads(head)
        version = document.get("faceanon_video")
        if version not in (1, DOCUMENT_VERSION):
            raise ValueError("unknown version")
        records = document["metadata"]
        if not isinstance(records, list) or not all(
            r is None or isinstance(r, str) for r in records
        ):
            raise ValueError("metadata is not a list of texts")
        entries = document.get("latents", [None] * len(records))
        if not isinstance(entries, list) or len(entries) != len(records):
            raise ValueError("exact face data is not one entry per frame")
        kind = str if version == 1 else int
        if not all(e is None or (isinstance(e, kind) and not isinstance(e, bool)) for e in entries):
            raise ValueError("exact face data entries of the wrong kind")
        exact = _texts(entries) if version == 1 else _slices(entries, body)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MetadataError(f"{path}: faceanon metadata is damaged ({_reason(exc)})") from None
    return records, exact


def _slices(lengths: list[Any], body: bytes) -> list[bytes | None]:
    if any(n is not None and n < 0 for n in lengths) or sum(n or 0 for n in lengths) != len(body):
        raise ValueError("exact face data lengths do not match the data")
    out: list[bytes | None] = []
    start = 0
    for n in lengths:
        out.append(None if n is None else body[start : start + n])
        start += n or 0
    return out


def _texts(entries: list[Any]) -> list[bytes | None]:
    """Version 1's base64 texts as bytes (a damaged one as empty data, which the frame's
    restore refuses in one line)."""
    import base64
    import binascii

    out: list[bytes | None] = []
    for e in entries:
        try:
            out.append(None if e is None else base64.b64decode(e, validate=True))
        except (binascii.Error, ValueError):
            out.append(b"")
    return out


def exact_data(video: Path, exact: list[ExactFaces | None]) -> list[bytes | None]:
    """Per frame of the ``video`` just written, its faces' exact data where ``exact`` has
    them, from the frames as they decode (:mod:`faceanon.media.latents`)."""
    out: list[bytes | None] = [None] * len(exact)
    container = open_video(video)
    try:
        for frame in frames(container, None, lambda packet: None):
            if frame.index < len(exact) and (faces := exact[frame.index]) is not None:
                out[frame.index] = faces.data(frame.rgb)
    finally:
        container.close()
    return out
