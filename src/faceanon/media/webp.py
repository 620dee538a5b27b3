"""faceanon's data in WebP files: two chunks of its own after the image, one for the metadata
(JSON text, as a PNG's iTXt chunk holds it) and one for a keyflip face's exact latents
(:mod:`faceanon.media.latents`, raw). A WebP file is a RIFF list of chunks; the extended
layout (a ``VP8X`` chunk first) lets a file carry chunks a decoder does not know, and
decoders skip them (libwebp, browsers). A simple file (the image chunk alone) is given the
``VP8X`` header first. Tools that rewrite the file may drop the chunks, as JPEG tools drop
APP segments: the restore then says so in one line."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

METADATA = b"FAMD"  # faceanon metadata, UTF-8 JSON
LATENTS = b"FALT"  # exact face data


def add_chunks(
    webp: bytes, chunks: Sequence[tuple[bytes, bytes]], width: int, height: int
) -> bytes:
    """``webp`` (as Pillow writes it) with ``chunks`` (FourCC, payload) appended; ``width``
    and ``height``: the image's, for the ``VP8X`` header a simple file needs first."""
    if webp[:4] != b"RIFF" or webp[8:12] != b"WEBP":
        raise ValueError("not a WebP file")
    body = webp[12:]
    if body[:4] in (b"VP8 ", b"VP8L"):  # simple layout: no flag set (no ICC, alpha, EXIF, XMP)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = b"VP8X" + struct.pack("<I", 10) + bytes(4) + canvas + body
    elif body[:4] != b"VP8X":
        raise ValueError("not a WebP layout faceanon knows")
    for fourcc, payload in chunks:
        body += fourcc + struct.pack("<I", len(payload)) + payload + bytes(len(payload) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def remove_chunks(webp: bytes, unwanted: Sequence[bytes]) -> bytes:
    """``webp`` without its chunks of the ``unwanted`` FourCCs (what a tool that keeps only
    the chunks it knows leaves)."""
    kept = b""
    for fourcc, start, size in _walk(webp):
        if fourcc not in unwanted:
            kept += webp[start - 8 : start + size + size % 2]
    return b"RIFF" + struct.pack("<I", 4 + len(kept)) + b"WEBP" + kept


def read_chunks(webp: bytes, wanted: Sequence[bytes]) -> dict[bytes, bytes]:
    """The first chunk of each ``wanted`` FourCC in ``webp`` (none for a file that is not a
    WebP; a chunk that runs past the end of the file ends the walk)."""
    found: dict[bytes, bytes] = {}
    for fourcc, start, size in _walk(webp):
        if fourcc in wanted and fourcc not in found:
            found[fourcc] = webp[start : start + size]
    return found


def _walk(webp: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk's FourCC, where its payload starts and its size, up to one that runs past
    the end of the file (none for a file that is not a WebP)."""
    if webp[:4] != b"RIFF" or webp[8:12] != b"WEBP":
        return
    end = min(len(webp), 8 + int.from_bytes(webp[4:8], "little"))
    i = 12
    while i + 8 <= end:
        size = int.from_bytes(webp[i + 4 : i + 8], "little")
        if i + 8 + size > end:
            return
        yield webp[i : i + 4], i + 8, size
        i += 8 + size + size % 2
