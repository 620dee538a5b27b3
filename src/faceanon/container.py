"""What travels inside an output image so that ``faceanon deanonymize IMAGE -k KEY`` needs
nothing else: format version, method, backbone + revision, steps, and per face its nonce and mask.

Nothing here reveals the key (there is deliberately no key fingerprint: it would let an
attacker test key guesses) or the original face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from faceanon.errors import MetadataError
from faceanon.masks import EllipseMask

FORMAT_VERSION = 1
CHUNK_KEY = "faceanon"  # PNG iTXt keyword; JPEG outputs carry the same JSON as a comment


@dataclass(frozen=True)
class FaceRecord:
    nonce: bytes | None  # None: paper mode
    mask: EllipseMask


@dataclass(frozen=True)
class Metadata:
    method: str
    backbone: str
    revision: str | None
    steps: int
    faces: tuple[FaceRecord, ...]
    aligned: bool = True

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "faceanon": FORMAT_VERSION,
            "method": self.method,
            "backbone": self.backbone,
            "revision": self.revision,
            "steps": self.steps,
            "aligned": self.aligned,
            "faces": [
                {"nonce": None if f.nonce is None else f.nonce.hex(), "mask": f.mask.to_json()}
                for f in self.faces
            ],
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Metadata:
        try:
            data = json.loads(text)
            version = data["faceanon"]
            if version != FORMAT_VERSION:
                raise MetadataError(
                    f"faceanon metadata format {version} is not supported by this version "
                    f"(reads format {FORMAT_VERSION}); upgrade faceanon"
                )
            faces = tuple(
                FaceRecord(
                    None if f["nonce"] is None else bytes.fromhex(f["nonce"]),
                    EllipseMask.from_json(f["mask"]),
                )
                for f in data["faces"]
            )
            revision = data["revision"]
            meta = cls(
                method=str(data["method"]),
                backbone=str(data["backbone"]),
                revision=None if revision is None else str(revision),
                steps=int(data["steps"]),
                faces=faces,
                aligned=bool(data["aligned"]),
            )
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataError(f"faceanon metadata is damaged ({type(exc).__name__})") from None
        if meta.method != "keyflip" or not faces or meta.steps < 1:
            raise MetadataError("faceanon metadata is damaged (method, faces or steps)")
        return meta
