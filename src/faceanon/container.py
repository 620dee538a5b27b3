"""What travels inside an output image so that ``faceanon deanonymize IMAGE -k KEY`` needs
nothing else.

In the clear: format version, method, backbone + revision, steps, the photo's size, and per face
its nonce and detection box (where the face is: visible in the image anyway). Sealed with a
key-derived AEAD key (ChaCha20-Poly1305): per face the alignment transform and the landmark
mask polygon, since the face's proportions could help re-identify it. Nothing here reveals the
key or the original face.

The sealed part's 16-byte tag does tell a holder of a candidate key whether it is right. That
does not help guess a 128-bit random key; a passphrase key costs one scrypt (128 MiB) per guess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.engine import inversion_name, parse_inversion
from faceanon.errors import MetadataError
from faceanon.faces.align import Alignment
from faceanon.masks import EllipseMask, LandmarkMask, Mask

if TYPE_CHECKING:
    from faceanon.keys import SecretKey

FORMAT_VERSION = 2  # 1: aligned crops only (still read)
CHUNK_KEY = "faceanon"  # PNG iTXt keyword; JPEG outputs carry the same JSON as a comment
METHODS = ("keyflip", "blur", "pixelate", "solid")
REVERSIBLE = ("keyflip",)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceRecord:
    nonce: bytes | None  # None: paper mode, or a method without a key
    box: Box | None = None  # photos: where the face was found
    mask: EllipseMask | None = None  # aligned crops: the mask used


@dataclass(frozen=True, eq=False)
class Geometry:
    """How a face was cut from the photo and which part of the crop was changed."""

    alignment: Alignment
    mask: Mask  # LandmarkMask in photos; EllipseMask for aligned crops (identity alignment)


def _geometry_key(key: SecretKey) -> bytes:
    message = b"faceanon/geometry/v1\x00" + key.material
    return hashlib.shake_256(message).digest(32)


@dataclass(frozen=True)
class Metadata:
    method: str
    faces: tuple[FaceRecord, ...]
    backbone: str | None = None
    revision: str | None = None
    steps: int | None = None
    photo_size: tuple[int, int] | None = None  # (width, height); None: an aligned crop
    sealed: tuple[bytes, bytes] | None = None  # (AEAD nonce, ciphertext) of the geometry
    inversion: str | None = None  # keyflip: "ddim" or "fixed-point:K"; absent in 0.1 files

    @property
    def aligned(self) -> bool:
        return self.photo_size is None

    def _header(self) -> dict[str, Any]:
        faces: list[dict[str, Any]] = []
        for f in self.faces:
            face: dict[str, Any] = {"nonce": None if f.nonce is None else f.nonce.hex()}
            if f.box is not None:
                face["box"] = [round(v, 2) for v in f.box]
            if f.mask is not None:
                face["mask"] = f.mask.to_json()
            faces.append(face)
        header: dict[str, Any] = {
            "faceanon": FORMAT_VERSION,
            "method": self.method,
            "backbone": self.backbone,
            "revision": self.revision,
            "steps": self.steps,
            "photo_size": None if self.photo_size is None else list(self.photo_size),
            "faces": faces,
        }
        if self.inversion is not None:
            header["inversion"] = self.inversion
        return header

    def _aad(self) -> bytes:
        return json.dumps(self._header(), separators=(",", ":"), sort_keys=True).encode()

    def to_json(self) -> str:
        data = self._header()
        if self.sealed is not None:
            nonce, blob = self.sealed
            data["sealed"] = {"nonce": nonce.hex(), "data": base64.b64encode(blob).decode()}
        return json.dumps(data, separators=(",", ":"))

    def seal(self, key: SecretKey, geometry: Sequence[Geometry]) -> Metadata:
        """A copy carrying ``geometry`` (one per face) encrypted under a key-derived key."""
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if len(geometry) != len(self.faces):
            raise ValueError("one geometry per face")
        masks = [g.mask for g in geometry]
        if not all(isinstance(m, LandmarkMask) for m in masks):
            raise ValueError("only landmark masks are sealed")
        plain = json.dumps(
            [
                {
                    "alignment": g.alignment.matrix.ravel().tolist(),
                    "size": g.alignment.size,
                    "polygon": np.round(m.polygon, 4).tolist(),  # type: ignore[attr-defined]
                }
                for g, m in zip(geometry, masks, strict=True)
            ],
            separators=(",", ":"),
        ).encode()
        nonce = secrets.token_bytes(12)
        blob = ChaCha20Poly1305(_geometry_key(key)).encrypt(nonce, plain, self._aad())
        return replace(self, sealed=(nonce, blob))

    def open(self, key: SecretKey) -> list[Geometry]:
        """The sealed geometry; MetadataError if the key is wrong or the metadata was altered."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if self.sealed is None:
            raise MetadataError("the metadata carries no face geometry")
        nonce, blob = self.sealed
        try:
            plain = ChaCha20Poly1305(_geometry_key(key)).decrypt(nonce, blob, self._aad())
        except InvalidTag:
            raise MetadataError(
                "this key does not open the face geometry (wrong key, or the metadata was altered)"
            ) from None
        out = []
        for g in json.loads(plain):
            size = int(g["size"])
            matrix = np.array(g["alignment"], dtype=np.float64).reshape(2, 3)
            polygon = np.array(g["polygon"], dtype=np.float64).reshape(-1, 2)
            out.append(Geometry(Alignment(matrix, size), LandmarkMask(polygon, size)))
        return out

    @classmethod
    def from_json(cls, text: str) -> Metadata:
        try:
            data = json.loads(text)
            version = data["faceanon"]
            if version not in (1, FORMAT_VERSION):
                raise MetadataError(
                    f"faceanon metadata format {version} is not supported by this version "
                    f"(reads formats 1 and {FORMAT_VERSION}); upgrade faceanon"
                )
            faces = tuple(
                FaceRecord(
                    None if f["nonce"] is None else bytes.fromhex(f["nonce"]),
                    None if "box" not in f else tuple(float(v) for v in f["box"][:4]),  # type: ignore[arg-type]
                    None if "mask" not in f else EllipseMask.from_json(f["mask"]),
                )
                for f in data["faces"]
            )
            size = data.get("photo_size")
            sealed = data.get("sealed")
            inversion = data.get("inversion")
            if inversion is not None:
                inversion = inversion_name(parse_inversion(str(inversion)))
            meta = cls(
                method=str(data["method"]),
                faces=faces,
                backbone=None if data["backbone"] is None else str(data["backbone"]),
                revision=None if data["revision"] is None else str(data["revision"]),
                steps=None if data["steps"] is None else int(data["steps"]),
                photo_size=None if size is None else (int(size[0]), int(size[1])),
                sealed=None
                if sealed is None
                else (bytes.fromhex(sealed["nonce"]), base64.b64decode(sealed["data"])),
                inversion=inversion,
            )
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise MetadataError(f"faceanon metadata is damaged ({type(exc).__name__})") from None
        if meta.method not in METHODS:
            raise MetadataError(f"faceanon metadata names an unknown method {meta.method!r}")
        if meta.method in REVERSIBLE and (
            meta.backbone is None
            or meta.steps is None
            or meta.steps < 1
            or (meta.aligned and (len(faces) != 1 or faces[0].mask is None))
            or (not meta.aligned and faces and meta.sealed is None)
        ):
            raise MetadataError("faceanon metadata is damaged (backbone, steps or faces)")
        return meta
