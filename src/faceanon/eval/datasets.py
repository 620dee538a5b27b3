"""The evaluation's data: LFW-style pairs files, identity lists, a seeded sample, and the
original images' located faces, alignment points and embeddings (cached on disk)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.eval.recognizers import FaceLocator, LocatedFace, Recognizer
from faceanon.media.io import read_image, write_atomic

if TYPE_CHECKING:
    pass


class EvaluationError(FaceanonError):
    """A pairs file or image folder the evaluation cannot use."""


@dataclass(frozen=True)
class Pair:
    a: str  # template image, relative to the image folder
    b: str  # probe image: the one anonymized
    same: bool
    fold: int


def load_pairs(path: Path) -> list[Pair]:
    """LFW's ``pairs.txt`` (header "folds n", then n matched and n mismatched lines per fold) or
    a TSV with a header ``image_a image_b same`` (folds: position modulo 10)."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path}: cannot read pairs file ({error})") from error
    if not lines:
        raise EvaluationError(f"{path}: empty pairs file")
    pairs: list[Pair] = []
    lfw = len(lines[0]) == 2 and all(v.isdigit() for v in lines[0])
    if not lfw and lines[0] != ["image_a", "image_b", "same"]:
        raise EvaluationError(f"{path}: not LFW pairs.txt, and no 'image_a image_b same' header")
    for number, fields in enumerate(lines[1:], start=2):
        index = len(pairs)
        try:
            if lfw:
                per_fold = 2 * int(lines[0][1])
                if len(fields) == 3:
                    name, i, j = fields
                    pair = (f"{name}/{name}_{int(i):04d}.jpg", f"{name}/{name}_{int(j):04d}.jpg", 1)
                elif len(fields) == 4:
                    n1, i, n2, j = fields
                    pair = (f"{n1}/{n1}_{int(i):04d}.jpg", f"{n2}/{n2}_{int(j):04d}.jpg", 0)
                else:
                    raise ValueError
                pairs.append(Pair(pair[0], pair[1], bool(pair[2]), index // per_fold))
            else:
                a, b, same = fields
                if same not in ("0", "1"):
                    raise ValueError
                pairs.append(Pair(a, b, same == "1", index % 10))
        except ValueError:
            raise EvaluationError(
                f"{path}: line {number} is not a pair: {' '.join(fields)}"
            ) from None
    if not any(p.same for p in pairs) or all(p.same for p in pairs):
        raise EvaluationError(f"{path}: needs both same-identity and different-identity pairs")
    return pairs


def sample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """``limit`` of ``items`` drawn under ``seed``, in their order (all if ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(keep)]


def read_probe(images: Path, name: str) -> np.ndarray:
    return read_image(images / name).image


@dataclass
class Original:
    face: LocatedFace | None
    points: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: dict[str, np.ndarray] = field(default_factory=dict)


class Originals:
    """Located faces, alignment points and embeddings of the original images, cached on disk
    (one file per image folder, locator and recognizer versions) so re-runs are cheap."""

    def __init__(
        self,
        images: Path,
        locator: FaceLocator,
        recognizers: Sequence[Recognizer],
        cache_dir: Path | None,
    ) -> None:
        self.images, self.locator, self.recognizers = images, locator, recognizers
        config = json.dumps(
            [str(images.resolve()), locator.version, [r.version for r in recognizers]]
        )
        digest = hashlib.sha256(config.encode()).hexdigest()[:16]
        self.path = None if cache_dir is None else cache_dir / f"originals-{digest}.npz"
        self.items: dict[str, Original] = {}
        self.loaded = 0
        if self.path is not None and self.path.is_file():
            try:
                self._load(self.path)
            except (OSError, ValueError, KeyError):  # damaged: recompute, then overwrite
                self.items = {}

    def _load(self, path: Path) -> None:
        with np.load(path) as npz:
            data = {key: npz[key] for key in npz.files}  # each npz[key] reads the whole array
            for i, name in enumerate(data["names"].tolist()):
                face = None
                if data["found"][i]:
                    box = tuple(float(v) for v in data["box"][i])
                    five = data["five"][i].reshape(5, 2)
                    face = LocatedFace(box, five, float(data["score"][i]))  # type: ignore[arg-type]
                item = Original(face)
                if face is not None:
                    for r in self.recognizers:
                        item.points[r.name] = data[f"points_{r.name}"][i]
                        item.embedding[r.name] = data[f"embedding_{r.name}"][i]
                self.items[name] = item
        self.loaded = len(self.items)

    def save(self) -> None:
        found = [(n, i) for n, i in self.items.items() if i.face is not None]
        if self.path is None or not found:
            return
        names = list(self.items)
        faces = [self.items[n].face for n in names]
        arrays: dict[str, np.ndarray] = {
            "names": np.array(names),
            "found": np.array([f is not None for f in faces]),
            "box": np.array([f.box if f else (0.0,) * 4 for f in faces]),
            "five": np.array([f.five.ravel() if f else np.zeros(10) for f in faces]),
            "score": np.array([f.score if f else 0.0 for f in faces]),
        }
        for r in self.recognizers:
            for kind in ("points", "embedding"):
                blank = np.zeros_like(getattr(found[0][1], kind)[r.name])
                arrays[f"{kind}_{r.name}"] = np.array(
                    [getattr(self.items[n], kind).get(r.name, blank) for n in names]
                )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        write_atomic(self.path, buffer.getvalue())

    def get(self, name: str) -> Original:
        if name not in self.items:
            image = read_probe(self.images, name)
            face = self.locator(image)
            item = Original(face)
            if face is not None:
                for r in self.recognizers:
                    item.points[r.name] = r.points(image, face)
                    item.embedding[r.name] = r.embed(image, item.points[r.name])
            self.items[name] = item
        return self.items[name]


def load_identities(path: Path) -> dict[str, str]:
    """A TSV with a header ``image identity`` (celeba-wild's ``identities.tsv``)."""
    try:
        lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path}: cannot read identities file ({error})") from error
    if not lines or [f.strip() for f in lines[0]] != ["image", "identity"]:
        raise EvaluationError(f"{path}: no 'image identity' header")
    out: dict[str, str] = {}
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) != 2:
            raise EvaluationError(f"{path}: line {number} is not 'image<TAB>identity'")
        out[fields[0].strip()] = fields[1].strip()
    return out


def lfw_identities(pairs: Sequence[Pair]) -> dict[str, str]:
    """LFW names its images ``Person/Person_0001.jpg``: the folder is the identity."""
    return {n: n.split("/")[0] for p in pairs for n in (p.a, p.b) if "/" in n}
