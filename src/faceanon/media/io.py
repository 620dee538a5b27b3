"""Reading and writing images: clear errors, no data loss (atomic writes, inputs never replaced)."""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from faceanon.errors import ImageError, OutputExistsError
from faceanon.limits import MAX_PIXELS
from faceanon.media import webp
from faceanon.media.latents import IDENTIFIER as LATENTS_IDENTIFIER

CHUNK_KEY = "faceanon"  # PNG iTXt keyword; JPEG outputs carry the same JSON as a comment,
# WebP outputs in a chunk of their own (media.webp)
LATENTS_KEY = "faceanon-latents"  # PNG iTXt keyword of exact face data (needs_exact_data), base64

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # read
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
WEBP_SUFFIXES = (".webp",)
WRITTEN_SUFFIXES = PNG_SUFFIXES + JPEG_SUFFIXES + WEBP_SUFFIXES


@dataclass(frozen=True)
class Picture:
    """An image as read: upright RGB pixels, faceanon metadata if any, and the file's own
    metadata (EXIF without the orientation tag, ICC profile), kept only if the user asks."""

    image: np.ndarray  # (H, W, 3) uint8
    faceanon: str | None = None
    exif: bytes | None = None
    icc: bytes | None = None
    latents: tuple[tuple[str, bytes], ...] = ()  # the file's exact face data (media.latents)
    lossy: bool = False  # JPEG or WebP: the pixels are not the ones written


def read_image(path: Path, data: bytes | None = None) -> Picture:
    """Read any image Pillow can, upright per EXIF orientation, as 8-bit RGB. With ``data``
    (an upload) the image is those bytes and ``path`` only names it in messages."""
    try:
        if data is None and path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image")
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: image too large ({img.width}x{img.height}, "
                        f"limit {MAX_PIXELS // 1_000_000} megapixels)"
                    )
                frames = int(getattr(img, "n_frames", 1))
                if frames > 1:
                    raise ImageError(f"{path}: animated image ({frames} frames) not supported")
                img.load()
                meta = img.text.get(CHUNK_KEY) if hasattr(img, "text") else None
                if meta is None and isinstance(img.info.get("comment"), bytes):
                    comment = img.info["comment"].decode("utf-8", "replace")
                    meta = comment if comment.startswith('{"faceanon"') else None
                upright = ImageOps.exif_transpose(img)
                exif = upright.getexif()
                exif.pop(0x0112, None)  # the pixels are upright now
                icc = img.info.get("icc_profile")
                segments = tuple(
                    (marker, data)
                    for marker, data in getattr(img, "applist", [])
                    if marker == "APP11" and data.startswith(LATENTS_IDENTIFIER)
                )
                text = img.text.get(LATENTS_KEY) if hasattr(img, "text") else None
                if isinstance(text, str):
                    segments += (("iTXt", text.encode("ascii", "replace")),)
                if img.format == "WEBP":
                    raw = path.read_bytes() if data is None else data
                    ours = webp.read_chunks(raw, (webp.METADATA, webp.LATENTS))
                    if webp.METADATA in ours:
                        meta = ours[webp.METADATA].decode("utf-8", "replace")
                    if webp.LATENTS in ours:
                        segments += (("WebP", ours[webp.LATENTS]),)
                lossy = img.format in ("JPEG", "MPO", "WEBP")
                rgb = _to_rgb(upright)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot read (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the file system's, not Pillow's
            raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    exif_bytes = exif.tobytes() if len(exif) else None
    return Picture(rgb, meta, exif_bytes, icc or None, segments, lossy)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip.
        data = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if data.max() > 255 else 255.0
        grey = np.clip(np.round(data / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black so transparent pixels get a defined colour.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def write_image(
    path: Path,
    image: np.ndarray,
    metadata: str | None,
    *,
    overwrite: bool,
    exif: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 95,
    latents: Callable[[np.ndarray], bytes] | None = None,
) -> None:
    """Write PNG (metadata in an iTXt chunk), JPEG or WebP (lossy at ``quality``; ``latents``:
    see :func:`encode_image`) as the name says, atomically.

    Nothing else from the input is written unless passed here: no EXIF, GPS or ICC profile.
    """
    suffix = path.suffix.lower()
    if suffix not in WRITTEN_SUFFIXES:
        raise ImageError(f"{path}: output must be .png (recommended), .jpg or .webp")
    kind = "jpeg" if suffix in JPEG_SUFFIXES else "webp" if suffix in WEBP_SUFFIXES else "png"
    data = encode_image(image, metadata, kind, exif=exif, icc=icc, quality=quality, latents=latents)
    write_atomic(path, data, overwrite=overwrite)


def encode_image(
    image: np.ndarray,
    metadata: str | None,
    kind: str = "png",
    *,
    exif: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 95,
    latents: Callable[[np.ndarray], bytes] | None = None,
) -> bytes:
    """The file's bytes (``kind`` png, jpeg or webp). PNG: the metadata in an iTXt chunk.
    JPEG (at ``quality``): the metadata as a comment, and ``latents(pixels)``, given the pixels
    the JPEG decodes to, in APP11 segments (the exact face data of
    :mod:`faceanon.media.latents`). WebP (lossy, at ``quality``): both in chunks of their own
    (:mod:`faceanon.media.webp`). Some outputs need that data in a PNG too
    (:func:`needs_exact_data`): there, base64 in a second iTXt chunk."""
    img = Image.fromarray(image, "RGB")
    buffer = io.BytesIO()
    if kind == "png":
        info = PngImagePlugin.PngInfo()
        if metadata is not None:
            info.add_itxt(CHUNK_KEY, metadata)
            if latents is not None and needs_exact_data(metadata, image):
                info.add_itxt(LATENTS_KEY, base64.b64encode(latents(image)).decode("ascii"))
        img.save(buffer, format="PNG", pnginfo=info, exif=exif or b"", icc_profile=icc)
        return buffer.getvalue()
    if kind == "jpeg":
        img.save(
            buffer,
            format="JPEG",
            quality=quality,
            comment=metadata or "",
            exif=exif or b"",
            icc_profile=icc,
        )
    else:
        img.save(buffer, format="WEBP", quality=quality, exif=exif or b"", icc_profile=icc)
    if latents is None and (kind == "jpeg" or metadata is None):
        return buffer.getvalue()
    exact = b""
    if latents is not None:
        with Image.open(io.BytesIO(buffer.getvalue())) as written:
            exact = latents(np.asarray(written.convert("RGB")))
    if kind == "jpeg":
        from faceanon.media.latents import add_to_jpeg

        return add_to_jpeg(buffer.getvalue(), exact)
    chunks = [] if metadata is None else [(webp.METADATA, metadata.encode("utf-8"))]
    if latents is not None:
        chunks.append((webp.LATENTS, exact))
    return webp.add_chunks(buffer.getvalue(), chunks, img.width, img.height)


def needs_exact_data(metadata: str, image: np.ndarray) -> bool:
    """Whether a file with this metadata and image needs its exact face data even when
    lossless (:func:`exact_data_need`)."""
    try:
        data = json.loads(metadata)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    return exact_data_need(data.get("method"), image, data.get("display")) is not None


def exact_data_need(method: object, image: np.ndarray, display: object = None) -> str | None:
    """What makes a file of ``method`` and ``image`` need its exact face data even when
    lossless, in words for the warning when it has none (None: nothing): a ``--method hide``
    file (its restore starts from other faces than it shows), a keyflip file whose faces are
    shown denoised (``display``, :mod:`faceanon.methods.display`) and a keyflip file of a grey
    photo (its faces are shown grey, the restore starts from the coloured ones)."""
    if method == "hide":
        return "a --method hide file"
    if method == "keyflip" and display is not None:
        return "a keyflip file whose faces are shown denoised"
    if method == "keyflip" and is_grey(image):
        return "a keyflip file of a grey photo"
    return None


GREY_SPREAD = 3  # 8-bit levels between a pixel's channels that still count as grey (JPEG)


def is_grey(image: np.ndarray) -> bool:
    """Whether every pixel of the RGB ``image`` is grey (its channels within
    ``GREY_SPREAD``): a black-and-white photo, whose new faces stay grey. It runs on every
    video frame: OpenCV per channel pair, every 16th row first (20x faster than numpy's max -
    min over the channels on a grey 720p frame, 600x on a colour one)."""
    import cv2

    for view in (image[::16], image):  # every 16th row first: a colour photo fails there
        r, g, b = (np.ascontiguousarray(view[..., i]) for i in range(3))
        for one, other in ((r, g), (g, b), (r, b)):
            if one.size and int(cv2.absdiff(one, other).max()) > GREY_SPREAD:
                return False
    return True


def write_atomic(path: Path, data: bytes | str, *, overwrite: bool = True) -> None:
    """Write a file so that a reader never sees half of it: a temporary file in the same
    folder, flushed to disk, then given its name. ``overwrite=False`` gives it the name with
    ``link``, which fails if the name exists, even if another run created it a moment ago (no
    check-then-rename race); otherwise ``replace``. An interrupted write leaves the old file (or
    none) and no temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; outputs are ordinary files
        if overwrite:
            os.replace(tmp, path)
        else:
            publish_exclusive(tmp, path)
        _sync_folder(path.parent)
    except FileExistsError:
        raise OutputExistsError(
            f"{path}: already exists (pass --overwrite to replace it)"
        ) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish_exclusive(tmp: str, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path`` only if no file has it: FileExistsError
    otherwise, also when another process took the name a moment ago. ``link`` does it in one
    step; where hard links are not supported (FAT, exFAT, some network shares) the name is
    reserved by an exclusive create, then replaced."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, path)


def _sync_folder(folder: Path) -> None:
    """Make the new name durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_files(folder: Path, tag: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Images (or files with other ``suffixes``) under ``folder`` (recursive, hidden ones
    skipped): for anonymize, not our own outputs; for deanonymize, only ``*_anonymized``."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative) or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            continue
        if tag == "deanonymized":
            wanted = path.stem.endswith("_anonymized")
        else:
            wanted = not path.stem.endswith(("_anonymized", "_deanonymized"))
        if wanted:
            found.append(path)
    return found
