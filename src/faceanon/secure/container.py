"""What travels inside an output image so that ``faceanon deanonymize IMAGE -k KEY`` needs
nothing else.

In the clear: format version, method, backbone + revision, steps, inversion, transform, the
tone shift's share (``colour``, format 5), the photo's size, the crop size, and per face its
nonce, detection box and alignment (where the face is and how it was cut: the anonymized face
keeps the pose, so this is visible in the image anyway). Hidden
under the key (``faceanon.secure.seal``): per face the polygon of the changed region (the face's own
outline), in an encoding that every key opens into some plausible polygon, so the file cannot
tell a right key from a wrong one. Where the mask has parts in the clear (a face parser's kept
cells, a landmark ControlNet's hint points: the output shows them anyway), they trace the face,
so a sealed outline beside them would let a key guess be checked against them: from format 4 the
outline of such a face is derived from its public parts (and ``--mask ellipse``'s fixed ellipse,
which anyone can predict, is stored as it is), and nothing of it is sealed. An unkeyed
checksum over everything catches accidental damage without involving the key.

Format 2 (faceanon 0.1 photos) sealed alignment and polygon with ChaCha20-Poly1305, whose tag
confirms a candidate key. Such files are still read: with a key that does not open the seal,
the faces are found anew, silently, like a wrong key on format 3.

One module: the writer and the reader of every format version, with the checks on each field
of an untrusted file, are kept side by side so that a change to one is read against the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.diffusion.ddim_settings import inversion_name, parse_inversion
from faceanon.errors import MetadataError
from faceanon.faces.align import Alignment
from faceanon.faces.masks import (
    KEEP_GRID,
    EllipseMask,
    FaceMask,
    LandmarkMask,
    Mask,
    covering,
    keep_from_bytes,
    public_outline,
)
from faceanon.limits import (
    MAX_COLOUR,
    MAX_FACES,
    MAX_JSON_DEPTH,
    MAX_METADATA_CHARS,
    MAX_PIXELS,
    MAX_STEPS,
    MIN_DISPLAY,
    MIN_FACE_AREA,
)
from faceanon.secure.transforms import TRANSFORMS

if TYPE_CHECKING:
    from faceanon.secure.keys import SecretKey

# 1: aligned crops only; 2: AEAD-sealed geometry; 3: outlines sealed in an encoding every key
# opens; 4: a face whose mask is public (the fixed ellipse) or has public parts (kept cells,
# hint points) has its outline stored or derived from them in the clear and nothing sealed (its
# sealed numbers are zeros); 5: the public tone shift of keyflip faces ("colour",
# faceanon.methods.colour), which the restore undoes first (a reader of 4 would restore such a
# file wrongly, so it refuses it); 6: keyflip faces shown denoised ("display",
# faceanon.methods.display: the restore needs the file's exact face data). All are still read.
FORMAT_VERSION = 6
READS = (1, 2, 3, 4, 5, FORMAT_VERSION)
METHODS = ("keyflip", "hide", "hydro", "blur", "pixelate", "solid")
REVERSIBLE = ("keyflip", "hide")  # hide: keyflip's restore, from the exact face data
SEAL_NONCE_BYTES = 16
CHECK_BYTES = 16

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceRecord:
    nonce: bytes | None  # None: paper mode, or a method without a key
    box: Box | None = None  # photos: where the face was found
    mask: EllipseMask | None = None  # aligned crops, and photos' --mask ellipse: the mask used
    align: tuple[float, float, float, float] | None = None  # photos, format 3: a, b, tx, ty
    keep: bytes | None = None  # photos, parser masks: the cells kept as they were (occluders)
    points: tuple[tuple[int, int], ...] | None = None  # photos: a landmark ControlNet's hint


@dataclass(frozen=True, eq=False)
class Geometry:
    """How a face was cut from the photo and which part of the crop was changed."""

    alignment: Alignment
    mask: Mask  # LandmarkMask in photos; EllipseMask for aligned crops (identity alignment)


def cover_box(g: Geometry, box: Box) -> Geometry:
    """A face's geometry with its outline grown to the convex hull of itself and its detection
    box (in the crop), so that the output covers every face it counts: a landmark outline
    leaves the forehead and the box corners, and most of a profile or border face (issue 32)."""
    x0, y0, x1, y1 = box
    corners = g.alignment.to_crop(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))
    if isinstance(g.mask, EllipseMask):
        return Geometry(g.alignment, covering(g.mask.polygon(g.alignment.size), corners))
    if isinstance(g.mask, LandmarkMask):
        return Geometry(g.alignment, covering(g.mask, corners))
    if isinstance(g.mask, FaceMask):
        return Geometry(g.alignment, replace(g.mask, outline=covering(g.mask.outline, corners)))
    return g


def _public_mask(
    keep: bytes | None,
    points: tuple[tuple[int, int], ...] | None,
    size: int,
    outline: LandmarkMask | None = None,
) -> FaceMask:
    """A face's mask with its public parts as the metadata stores them; its outline derived
    from them, or ``outline`` (format 3 sealed it)."""
    cells = None if keep is None else keep_from_bytes(keep)
    ints = None if points is None else np.array(points, dtype=np.int64).reshape(-1, 2)
    derived = public_outline(size, cells, ints) if outline is None else outline
    return FaceMask(derived, cells, ints)


def _aead_key(key: SecretKey) -> bytes:
    message = b"faceanon/geometry/v1\x00" + key.material
    return hashlib.shake_256(message).digest(32)


def _alignment(align: tuple[float, float, float, float], size: int) -> Alignment:
    a, b, tx, ty = align
    return Alignment(np.array([[a, b, tx], [-b, a, ty]], dtype=np.float64), size)


def round_box(box: Sequence[float]) -> Box:
    """A box as the metadata stores it (2 decimals)."""
    x0, y0, x1, y1 = (round(float(v), 2) for v in box)
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Metadata:
    method: str
    faces: tuple[FaceRecord, ...]
    backbone: str | None = None
    revision: str | None = None
    steps: int | None = None
    photo_size: tuple[int, int] | None = None  # (width, height); None: an aligned crop
    sealed: tuple[bytes, bytes] | None = None  # (seal nonce, sealed geometry of every face)
    inversion: str | None = None  # keyflip: "ddim" or "fixed-point:K"; absent in 0.1 files
    crop: int | None = None  # format 3 photos with a key: the aligned crop's side
    transform: str | None = None  # keyflip: "flip" or "mix"; absent: flip (0.1 files)
    # "box": each opened outline is grown to cover the face's box (public, in the clear), so
    # the sealed outline stays a landmark outline like the prior's draws; absent: 0.2 files.
    cover: str | None = None
    # keyflip: the share of the public tone shift toward the kept skin
    # (faceanon.methods.colour) the restore undoes first; absent: none (format 4 and earlier)
    colour: float | None = None
    # keyflip: the noise level at which the faces are shown denoised (faceanon.methods.display);
    # the restore starts from the exact faces the file carries. Absent: shown as they are.
    display: float | None = None
    version: int = FORMAT_VERSION

    @property
    def aligned(self) -> bool:
        return self.photo_size is None

    def _header(self) -> dict[str, Any]:
        faces: list[dict[str, Any]] = []
        for f in self.faces:
            face: dict[str, Any] = {"nonce": None if f.nonce is None else f.nonce.hex()}
            if f.box is not None:
                face["box"] = list(round_box(f.box))
            if f.align is not None:
                face["align"] = list(f.align)
            if f.mask is not None:
                face["mask"] = f.mask.to_json()
            if f.keep is not None:
                face["keep"] = base64.b64encode(f.keep).decode()
            if f.points is not None:
                face["points"] = [list(p) for p in f.points]
            faces.append(face)
        header: dict[str, Any] = {
            "faceanon": self.version,
            "method": self.method,
            "backbone": self.backbone,
            "revision": self.revision,
            "steps": self.steps,
            "photo_size": None if self.photo_size is None else list(self.photo_size),
            "faces": faces,
        }
        if self.inversion is not None:
            header["inversion"] = self.inversion
        if self.crop is not None:
            header["crop"] = self.crop
        if self.transform is not None:
            header["transform"] = self.transform
        if self.cover is not None:
            header["cover"] = self.cover
        if self.colour is not None:
            header["colour"] = self.colour
        if self.display is not None:
            header["display"] = self.display
        return header

    def covered(self, g: Geometry, box: Box | None) -> Geometry:
        """An opened face as the region to replace: with ``cover="box"`` grown over the face's
        box (:func:`cover_box`), else as it is (faceanon 0.2 files)."""
        return g if self.cover != "box" or box is None else cover_box(g, box)

    def _aad(self) -> bytes:
        return json.dumps(self._header(), separators=(",", ":"), sort_keys=True).encode()

    def _check(self) -> str:
        """An unkeyed checksum (no key involved, so it says nothing about any key)."""
        nonce, blob = self.sealed or (b"", b"")
        digest = hashlib.sha256(b"faceanon/check/v3\x00" + self._aad() + nonce + blob)
        return digest.digest()[:CHECK_BYTES].hex()

    def to_json(self) -> str:
        if self.version != FORMAT_VERSION:
            raise ValueError(f"only format {FORMAT_VERSION} is written")
        data = self._header()
        if self.sealed is not None:
            nonce, blob = self.sealed
            data["sealed"] = {"nonce": nonce.hex(), "data": base64.b64encode(blob).decode()}
        data["check"] = self._check()
        return json.dumps(data, separators=(",", ":"))

    def seal(
        self, key: SecretKey, geometry: Sequence[Geometry], nonce: bytes | None = None
    ) -> tuple[Metadata, list[Geometry]]:
        """A copy carrying ``geometry`` (one per face, in the order of ``faces``): alignments in
        the clear, polygons hidden under ``key``; and the geometry as any later open with this
        key returns it. Anonymize with that one: its polygon is the face's as 32 rays kept to
        12 principal components (faceanon.secure.seal), within a pixel or two. A public mask (the
        fixed ellipse, or a :class:`FaceMask`'s public parts) is stored in the clear and its
        sealed numbers are zeros: a sealed copy would be a key check."""
        from faceanon.secure.seal import PARAMS, seal_face

        if len(geometry) != len(self.faces):
            raise ValueError("one geometry per face")
        if nonce is None:  # given only by tests that compare two runs byte for byte
            nonce = secrets.token_bytes(SEAL_NONCE_BYTES)
        sizes = {g.alignment.size for g in geometry}
        if len(sizes) != 1:
            raise ValueError("all faces of a photo are cut at one crop size")
        blobs, faces, decoded = [], [], []
        for i, (record, g) in enumerate(zip(self.faces, geometry, strict=True)):
            m = g.alignment.matrix
            if not np.allclose(m[1, :2], [-m[0, 1], m[0, 0]], rtol=0, atol=1e-12 * abs(m).max()):
                raise ValueError("face alignments must be similarity transforms")
            align = (float(m[0, 0]), float(m[0, 1]), float(m[0, 2]), float(m[1, 2]))
            keep = points = ellipse = None
            mask: Mask
            if isinstance(g.mask, EllipseMask):  # public: the fixed ellipse, nothing sealed
                ellipse = g.mask
                blob, mask = bytes(8 * PARAMS), ellipse.polygon(g.alignment.size)
            elif isinstance(g.mask, FaceMask):  # public parts: derive the outline, seal nothing
                keep = g.mask.keep_bytes()
                if g.mask.points is not None:
                    points = tuple((int(x), int(y)) for x, y in g.mask.points)
                blob, mask = bytes(8 * PARAMS), _public_mask(keep, points, g.alignment.size)
            else:
                blob, mask = seal_face(key, nonce, i, g.mask)
            blobs.append(blob)
            faces.append(replace(record, align=align, keep=keep, points=points, mask=ellipse))
            opened = _alignment(align, g.alignment.size)
            box = None if record.box is None else round_box(record.box)  # as the file holds it
            decoded.append(self.covered(Geometry(opened, mask), box))
        sealed = replace(
            self, faces=tuple(faces), sealed=(nonce, b"".join(blobs)), crop=sizes.pop()
        )
        return sealed, decoded

    def open(self, key: SecretKey, size: int) -> list[Geometry] | None:
        """Each face's geometry under ``key`` (``size``: the crop side for format-2 files). Any
        key opens a format-3 file (a wrong one into other plausible polygons); None: a format-2
        seal that this key does not open."""
        if self.sealed is None:
            raise MetadataError("the metadata carries no face geometry")
        if self.version == 2:
            return self._open_aead(key)
        from faceanon.secure.seal import PARAMS, open_face

        nonce, blob = self.sealed
        crop, step = self.crop or size, 8 * PARAMS
        out = []
        for i, f in enumerate(self.faces):
            if f.align is None:
                continue
            public = f.keep is not None or f.points is not None
            mask: Mask
            if f.mask is not None and self.version >= 4:
                mask = f.mask.polygon(crop)
            elif public and self.version >= 4:
                mask = _public_mask(f.keep, f.points, crop)
            else:
                outline = open_face(key, nonce, i, blob[i * step : (i + 1) * step], crop)
                # Format 3 sealed the outline beside the public parts.
                mask = _public_mask(f.keep, f.points, crop, outline) if public else outline
            alignment = _alignment(f.align, crop)
            out.append(self.covered(Geometry(alignment, mask), f.box))
        return out

    def _open_aead(self, key: SecretKey) -> list[Geometry] | None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        assert self.sealed is not None
        nonce, blob = self.sealed
        try:
            plain = ChaCha20Poly1305(_aead_key(key)).decrypt(nonce, blob, self._aad())
        except (InvalidTag, ValueError):
            return None
        try:
            out = []
            for g in json.loads(plain):
                size = int(g["size"])
                matrix = np.array(g["alignment"], dtype=np.float64).reshape(2, 3)
                polygon = np.array(g["polygon"], dtype=np.float64).reshape(-1, 2)
                if not (np.isfinite(matrix).all() and np.isfinite(polygon).all()):
                    raise ValueError("not finite")
                out.append(Geometry(Alignment(matrix, size), LandmarkMask(polygon, size)))
        except (ValueError, KeyError, TypeError, IndexError):
            raise MetadataError("faceanon metadata is damaged (sealed geometry)") from None
        return out if len(out) == len(self.faces) else None

    @classmethod
    def from_json(cls, text: str) -> Metadata:
        """Parse untrusted metadata: any problem is a MetadataError with a one-line reason."""
        if len(text) > MAX_METADATA_CHARS:
            raise MetadataError(
                f"faceanon metadata too large ({len(text)} characters, limit {MAX_METADATA_CHARS})"
            )
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise MetadataError("faceanon metadata is damaged (not JSON)") from None
        if _depth(data) > MAX_JSON_DEPTH:
            raise MetadataError("faceanon metadata is damaged (nested too deep)")
        try:
            meta = _parse(data)
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) and str(exc) else type(exc).__name__
            raise MetadataError(f"faceanon metadata is damaged ({detail})") from None
        if meta.version >= 3 and "check" not in data:
            raise MetadataError("faceanon metadata is damaged (no checksum)")
        if meta.version >= 3 and data["check"] != meta._check():
            raise MetadataError("faceanon metadata is damaged (checksum does not match)")
        return meta


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max([level, *(_depth(v, level + 1) for v in value.values())])
    if isinstance(value, list):
        return max([level, *(_depth(v, level + 1) for v in value)])
    return level


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not finite")
    return number


def _share(value: Any) -> float:
    share = _number(value, "colour")
    if not 0 < share <= MAX_COLOUR:
        raise ValueError(f"colour must be a share in (0, {MAX_COLOUR}]")
    return share


def _level(value: Any) -> float:
    level = _number(value, "display")
    if not MIN_DISPLAY <= level < 1:
        raise ValueError(f"display must be a noise level in [{MIN_DISPLAY}, 1)")
    return level


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}")
    return value


def _text(value: Any, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"{what} is not a short text")
    return value


def _choice(value: Any, what: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}")
    return str(value)


def _hex(value: Any, what: str, length: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * length:
        raise ValueError(f"{what} must be {length} bytes in hex")
    return bytes.fromhex(value)


def _box(value: Any, size: tuple[int, int] | None) -> Box:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("a face box is not 4 numbers")
    x0, y0, x1, y1 = (_number(v, "a face box") for v in value)
    if not (x0 < x1 and y0 < y1):
        raise ValueError("a face box is empty")
    if size is not None:
        width, height = size
        # Detection boxes may reach a little past the border (faces cut by the edge).
        if not (
            -width <= x0 < width
            and -height <= y0 < height
            and 0 < x1 <= 2 * width
            and 0 < y1 <= 2 * height
        ):
            raise ValueError("a face box lies outside the photo")
    return (x0, y0, x1, y1)


def _align(value: Any, size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4 or size is None:
        raise ValueError("a face alignment is not 4 numbers of a photo")
    a, b, tx, ty = (_number(v, "a face alignment") for v in value)
    return (a, b, tx, ty)


def _ellipse(value: Any) -> EllipseMask:
    if not isinstance(value, dict):
        raise ValueError("the crop mask is not an object")
    mask = EllipseMask.from_json(value)
    centre_ok = 0 <= mask.cx <= 1 and 0 <= mask.cy <= 1
    if not (centre_ok and 0 < mask.rx <= 1 and 0 < mask.ry <= 1):
        raise ValueError("the crop mask lies outside the crop")
    return mask


def _parse(data: Any) -> Metadata:
    if not isinstance(data, dict):
        raise ValueError("not an object")
    version = data["faceanon"]
    if version not in READS or isinstance(version, bool):
        raise MetadataError(
            f"faceanon metadata format {str(version)[:20]} is not supported by this version "
            f"(reads formats {', '.join(map(str, READS))}); upgrade faceanon"
        )
    method = data["method"]
    if method not in METHODS:
        raise MetadataError(f"faceanon metadata names an unknown method {str(method)[:40]!r}")
    size_data = data.get("photo_size")
    size: tuple[int, int] | None = None
    if size_data is not None:
        if not isinstance(size_data, list) or len(size_data) != 2:
            raise ValueError("photo size is not 2 numbers")
        size = (
            _integer(size_data[0], "photo width", 1, MAX_PIXELS),
            _integer(size_data[1], "photo height", 1, MAX_PIXELS),
        )
        if size[0] * size[1] > MAX_PIXELS:
            raise ValueError("photo size over the pixel limit")
    face_data = data["faces"]
    if not isinstance(face_data, list):
        raise ValueError("faces is not a list")
    limit = (
        MAX_FACES if size is None else min(MAX_FACES, max(1, size[0] * size[1] // MIN_FACE_AREA))
    )
    if len(face_data) > limit:
        raise ValueError(f"{len(face_data)} faces, more than the photo can hold ({limit})")
    faces = []
    for f in face_data:
        if not isinstance(f, dict):
            raise ValueError("a face is not an object")
        from faceanon.secure.keys import NONCE_BYTES

        nonce = None if f.get("nonce") is None else _hex(f["nonce"], "a face nonce", NONCE_BYTES)
        box = None if "box" not in f else _box(f["box"], size)
        mask = None if "mask" not in f else _ellipse(f["mask"])
        align = None if "align" not in f else _align(f["align"], size)
        keep = None if "keep" not in f else _keep(f["keep"])
        points = None if "points" not in f else _points(f["points"], data.get("crop"))
        faces.append(FaceRecord(nonce, box, mask, align, keep, points))
    steps = data["steps"]
    inversion = data.get("inversion")
    transform = data.get("transform")
    sealed_data = data.get("sealed")
    sealed = None
    if sealed_data is not None:
        if not isinstance(sealed_data, dict):
            raise ValueError("sealed is not an object")
        nonce_length = 12 if version == 2 else SEAL_NONCE_BYTES
        data_text = _text(sealed_data["data"], "sealed data", MAX_METADATA_CHARS)
        sealed = (
            _hex(sealed_data["nonce"], "the seal nonce", nonce_length),
            base64.b64decode(data_text, validate=True),
        )
    backbone, revision = data["backbone"], data["revision"]
    meta = Metadata(
        method=method,
        faces=tuple(faces),
        backbone=None if backbone is None else _text(backbone, "backbone"),
        revision=None if revision is None else _text(revision, "revision", 100),
        steps=None if steps is None else _integer(steps, "steps", 1, MAX_STEPS),
        photo_size=size,
        sealed=sealed,
        inversion=None if inversion is None else inversion_name(parse_inversion(str(inversion))),
        crop=None if "crop" not in data else _integer(data["crop"], "crop size", 8, 4096),
        transform=None if transform is None else _choice(transform, "transform", TRANSFORMS),
        cover=None if data.get("cover") is None else _choice(data["cover"], "cover", ("box",)),
        colour=None if data.get("colour") is None else _share(data["colour"]),
        display=None if data.get("display") is None else _level(data["display"]),
        version=version,
    )
    if meta.method in REVERSIBLE:
        _check_reversible(meta)
    return meta


def _keep(value: Any) -> bytes:
    """The kept cells of a parser mask: KEEP_GRID^2 bits, base64."""
    text = _text(value, "kept cells", 4 * KEEP_GRID * KEEP_GRID // 24 + 4)
    data = base64.b64decode(text, validate=True)
    if len(data) != KEEP_GRID * KEEP_GRID // 8:
        raise ValueError(f"kept cells must be {KEEP_GRID * KEEP_GRID // 8} bytes")
    return data


MAX_POINTS = 68


def _points(value: Any, crop: Any) -> tuple[tuple[int, int], ...]:
    """Hint points: at most 68 pairs of whole crop pixels."""
    side = _integer(crop, "crop size", 8, 4096)
    if not isinstance(value, list) or not 0 < len(value) <= MAX_POINTS:
        raise ValueError(f"hint points are not a list of 1 to {MAX_POINTS} points")
    out = []
    for point in value:
        if not isinstance(point, list) or len(point) != 2:
            raise ValueError("a hint point is not 2 numbers")
        out.append(
            (_integer(point[0], "hint x", 0, side - 1), _integer(point[1], "hint y", 0, side - 1))
        )
    return tuple(out)


def _check_reversible(meta: Metadata) -> None:
    from faceanon.secure.seal import PARAMS

    if meta.backbone is None or meta.steps is None:
        raise ValueError("no backbone or steps")
    if meta.aligned:
        if len(meta.faces) != 1 or meta.faces[0].mask is None:
            raise ValueError("an aligned crop needs one face with its mask")
        return
    if any(f.box is None for f in meta.faces):
        raise ValueError("a face has no box")
    if meta.version >= 3 and meta.faces:
        if meta.crop is None or any(f.align is None for f in meta.faces):
            raise ValueError("a face has no alignment")
        assert meta.photo_size is not None
        width, height = meta.photo_size
        for f in meta.faces:
            assert f.align is not None
            # The crop: at least 1 px and at most 4 photo sides wide, centred near the photo.
            side = meta.crop / max(math.hypot(f.align[0], f.align[1]), 1e-300)
            if not 1 <= side <= 4 * max(width, height):
                raise ValueError("a face alignment has an impossible scale")
            centre = _alignment(f.align, meta.crop).to_photo(np.full((1, 2), meta.crop / 2))[0]
            if not (-width <= centre[0] <= 2 * width and -height <= centre[1] <= 2 * height):
                raise ValueError("a face alignment lies outside the photo")
    if meta.faces and meta.sealed is None:
        raise ValueError("no face geometry")
    sealed = meta.sealed
    if meta.version >= 3 and sealed is not None and len(sealed[1]) != 8 * PARAMS * len(meta.faces):
        raise ValueError("sealed geometry of the wrong length")
