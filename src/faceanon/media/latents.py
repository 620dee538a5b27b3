"""Exact face latents beside a lossy picture, so that a JPEG (or H.264) output restores as a
lossless one does.

The restore starts from the latent of each anonymized face crop (the backbone's ``encode`` of
the crop cut from the output). A lossy file changes those pixels, and the restore follows: a
JPEG at quality 85 restored the example face at 18.8 dB against the PNG's 26.1. The anonymized
face is public (anyone who sees the image sees it), so its latent can travel with the picture:
quantised to ``STEP`` (one 8-bit level for the embedded models' 4x4-mean latents) and stored
as the difference from the latent of the lossy crop, which is small and compresses to a few
kB a face. The restore adds the difference to the latent it computes from the lossy pixels.
Only the cells the restore pastes back need it (the mask's, grown by ``GROW`` cells):
elsewhere the difference is stored as zero (on the example photo: the same restore, a third
less data). A decoder that rounds a little differently only adds its own difference; a
re-encoded file loses that much and no more.

Nothing secret is added: the sealed geometry stays in the metadata, the key in the key file.
The data is bound to the metadata (a SHA-256 of its text): data of another image is refused.

The data (``faceanon-latents`` version 1): a JSON header line (version, metadata digest, per
face its latent shape or null, the residuals' byte width), then the residuals of every face
in order, as little-endian integers, zlib-compressed. In a JPEG: APP11 segments, each
``IDENTIFIER``, a 2-byte sequence number and up to ``SEGMENT`` bytes of the data. In a WebP:
a chunk of its own (:mod:`faceanon.media.webp`). In a video: one per frame, in the metadata
document (:mod:`faceanon.media.codec`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.errors import MetadataError
from faceanon.limits import MAX_FACES

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.secure.container import Geometry

VERSION = 1
STEP = 2 / 255  # latent units per quantisation level: one 8-bit level in [-1, 1]
GROW = 2  # latent cells around the mask whose residuals are kept (the paste's feathered edge)
IDENTIFIER = b"faceanon-latents\0"
APP11 = 0xFFEB
SEGMENT = 65533 - 2 - len(IDENTIFIER) - 2  # payload bytes per APP11 segment
MAX_BYTES = 64 * 2**20  # compressed
MAX_VALUES = 16 * 2**20  # decompressed, all faces: MAX_FACES latents of 3 x 64 x 64 fit


def quantise(latent: np.ndarray) -> np.ndarray:
    return np.round((np.asarray(latent, np.float64) + 1) / STEP).astype(np.int64)


def digest(metadata: str) -> str:
    return hashlib.sha256(metadata.encode("utf-8")).hexdigest()[:32]


def encode(
    exact: Sequence[np.ndarray | None],
    lossy: Sequence[np.ndarray | None],
    metadata: str,
    where: Sequence[np.ndarray | None] | None = None,
) -> bytes:
    """The data for faces whose ``exact`` latents (from the lossless output, quantised with
    :func:`quantise`) and ``lossy`` ones (from the lossy file as written) are given; None: a
    face without (not keyed). ``where``: per face, the (h, w) latent cells whose residuals
    matter (the rest are stored as zeros, which cost almost nothing): the cells the restore
    pastes back."""
    shapes: list[list[int] | None] = []
    residuals = []
    for i, (e, lo) in enumerate(zip(exact, lossy, strict=True)):
        if e is None or lo is None:
            shapes.append(None)
            continue
        shapes.append(list(e.shape))
        residual = np.asarray(e, np.int64) - quantise(lo)
        cells = None if where is None else where[i]
        if cells is not None:
            residual = np.where(cells, residual, 0)
        residuals.append(residual.ravel())
    values = np.concatenate(residuals) if residuals else np.zeros(0, np.int64)
    width = 1 if values.size == 0 or np.abs(values).max() < 128 else 2
    clipped = np.clip(values, -(2 ** (8 * width - 1)), 2 ** (8 * width - 1) - 1)
    header = {
        "faceanon-latents": VERSION,
        "metadata": digest(metadata),
        "shapes": shapes,
        "width": width,
    }
    body = zlib.compress(clipped.astype(f"<i{width}").tobytes(), 9)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(data: bytes, metadata: str, faces: int) -> list[np.ndarray | None]:
    """Each face's residual (integer levels, shaped as its latent; None: none stored), checked
    against the metadata it must belong to. Raises :class:`MetadataError` (one line, no file
    name: the caller adds it) for data that is damaged, foreign or too large."""
    if len(data) > MAX_BYTES:
        raise MetadataError(f"exact face data too large ({len(data)} bytes)")
    line, _, body = data.partition(b"\n")
    try:
        header = json.loads(line)
        if not isinstance(header, dict) or header.get("faceanon-latents") != VERSION:
            raise ValueError("unknown version")
        shapes = header["shapes"]
        width = header["width"]
        if width not in (1, 2) or not isinstance(shapes, list) or len(shapes) > MAX_FACES:
            raise ValueError("bad header")
        sizes = []
        for shape in shapes:
            if shape is None:
                sizes.append(0)
                continue
            if not (
                isinstance(shape, list)
                and 1 <= len(shape) <= 4
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
            ):
                raise ValueError("bad latent shape")
            sizes.append(int(np.prod(shape)))
            if sum(sizes) > MAX_VALUES:
                raise ValueError("latents too large")
        expected = sum(sizes) * width
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, expected + 1)
        if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("its length does not match its header")
    except (ValueError, KeyError, TypeError, zlib.error, RecursionError) as exc:
        raise MetadataError(f"exact face data is damaged ({exc})") from None
    if header.get("metadata") != digest(metadata):
        raise MetadataError("exact face data belongs to another image (its metadata differs)")
    if len(shapes) != faces:
        raise MetadataError(f"exact face data for {len(shapes)} faces, the metadata has {faces}")
    values = np.frombuffer(raw, f"<i{width}").astype(np.int64)
    out: list[np.ndarray | None] = []
    start = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(None if shape is None else values[start : start + size].reshape(shape))
        start += size
    return out


def restored(lossy: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The exact latent (to ``STEP``) from the lossy one and its stored residual."""
    return np.asarray((quantise(lossy) + residual) * STEP - 1, np.float64)


def add_to_jpeg(jpeg: bytes, data: bytes) -> bytes:
    """``jpeg`` with ``data`` in APP11 segments right after the start-of-image marker (the
    image data is not touched)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    parts = [data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)] or [b""]
    if len(parts) > 0xFFFF:
        raise ValueError("exact face data too large for a JPEG")
    segments = b"".join(
        struct.pack(">HH", APP11, 2 + len(IDENTIFIER) + 2 + len(p))
        + IDENTIFIER
        + struct.pack(">H", i)
        + p
        for i, p in enumerate(parts)
    )
    return jpeg[:2] + segments + jpeg[2:]


def split_jpeg(jpeg: bytes) -> tuple[bytes, list[bytes]]:
    """``jpeg`` without its exact face data, and the APP11 segments taken out (what a tool
    that strips APP segments leaves; the image data is not touched)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    kept, taken, i = bytearray(jpeg[:2]), [], 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF and jpeg[i + 1] != 0xDA:  # up to the scan
        end = i + 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
        segment = jpeg[i:end]
        if jpeg[i + 1] == 0xEB and segment[4:].startswith(IDENTIFIER):
            taken.append(segment)
        else:
            kept += segment
        i = end
    return bytes(kept + jpeg[i:]), taken


def from_app_segments(segments: Sequence[tuple[str, bytes]]) -> bytes | None:
    """The data from a JPEG's APP segments (Pillow's ``applist``), a PNG's iTXt chunk
    (``("iTXt", base64 text)``) or a WebP's chunk (``("WebP", data)``), or None if it has none.
    Raises :class:`MetadataError` when the pieces are not all there, once each, in order, or
    the text is not base64."""
    raw = [s for m, s in segments if m == "WebP"]
    if raw:
        return raw[0]
    texts = [s for m, s in segments if m == "iTXt"]
    if texts:
        try:
            return base64.b64decode(texts[0], validate=True)
        except ValueError:
            raise MetadataError("exact face data is damaged (not base64)") from None
    ours = [s for m, s in segments if m == "APP11" and s.startswith(IDENTIFIER)]
    pieces = [s[len(IDENTIFIER) :] for s in ours]
    if not pieces:
        return None
    numbers = [struct.unpack(">H", p[:2])[0] if len(p) >= 2 else -1 for p in pieces]
    if numbers != list(range(len(pieces))):
        raise MetadataError("exact face data is damaged (its JPEG segments are out of order)")
    return b"".join(p[2:] for p in pieces)


@dataclass
class ExactFaces:
    """A keyflip output's faces as the restore cuts them: each face's exact latent (quantised,
    :mod:`faceanon.media.latents`), its alignment, and the latent cells the restore pastes
    back. :meth:`data` makes a lossy copy's exact face data; kept instead of the image where
    the lossy copy comes later (a video's frames)."""

    anonymizer: Anonymizer
    alignments: list[Any]
    levels: list[np.ndarray]
    where: list[np.ndarray]
    metadata: str

    @classmethod
    def of(
        cls, anonymizer: Anonymizer, image: np.ndarray, geometry: Sequence[Geometry], text: str
    ) -> ExactFaces:
        import cv2

        from faceanon.faces.align import warp_to_crop

        alignments = [g.alignment for g in geometry]
        exact = anonymizer.latents([warp_to_crop(image, a) for a in alignments]) if geometry else []
        _, h, w = anonymizer.backbone.latent_shape
        grow = np.ones((2 * GROW + 1,) * 2, np.uint8)
        where = [cv2.dilate(g.mask.grid(h, w).astype(np.uint8), grow) > 0 for g in geometry]
        levels = [quantise(e).astype(np.int16) for e in exact]  # small: videos keep them
        return cls(anonymizer, alignments, levels, where, text)

    def data(self, lossy: np.ndarray) -> bytes:
        """The exact face data for ``lossy``, the pixels a lossy copy decodes to."""
        from faceanon.faces.align import warp_to_crop

        crops = [warp_to_crop(lossy, a) for a in self.alignments]
        worse = self.anonymizer.latents(crops) if crops else []
        return encode(self.levels, worse, self.metadata, self.where)


def exact_faces(
    name: object,
    data: bytes | Sequence[tuple[str, bytes]] | None,
    lossy: bool,
    text: str,
    faces: int,
    backbone: Backbone,
    need: str | None = None,
) -> tuple[list[np.ndarray | None] | None, str | None]:
    """A file's exact face data (:mod:`faceanon.media.latents`; ``data``: its bytes, or a
    JPEG's APP segments or PNG's text) for a restore of its ``faces`` with ``backbone``, and a
    line to say when a file that needs it (``lossy``, or ``need``: what else makes it need
    the data, :func:`faceanon.media.io.exact_data_need`) has none or none it can use (the
    restore then starts from the pixels)."""
    fallback = f"restoring from the {'lossy ' if lossy else ''}pixels, less exactly"
    try:
        if data is not None and not isinstance(data, bytes):
            data = from_app_segments(data)
        if data is None:
            if need is not None:
                return None, f"warning: {name}: no exact face data, which {need} needs; {fallback}"
            if not lossy:
                return None, None
            return None, f"note: {name}: no exact face data in this lossy file; {fallback}"
        residuals = decode(data, text, faces)
    except MetadataError as exc:
        return None, f"warning: {name}: {exc}; {fallback}"
    shape = tuple(backbone.latent_shape)
    if any(r is not None and r.shape != shape for r in residuals):
        return (
            None,
            f"warning: {name}: exact face data not of {backbone.name}'s latents; {fallback}",
        )
    return residuals, None
