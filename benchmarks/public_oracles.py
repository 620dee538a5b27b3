"""Can the parts of a mask stored in the clear check a key guess? (issue 27, oracles 1 and 2)

A landmark ControlNet's hint points (17 of 26 on the jaw line) and a face parser's kept cells
(hair over the forehead) are stored in the clear; up to format 3 the face's outline was sealed
beside them. The attack: open the face's sealed numbers with each of 1,000 candidate keys (the
true one and 999 others; ``faceanon.secure.seal.open_face``, before any growing over the box)
and score
how well the outline fits the clear parts:

1. hint points: mean distance of the 17 jaw points to the opened outline (lower: better fit);
2. kept cells (a simulated parser that gives the top quarter of the face to hair): kept cells
   outside the opened outline (format 3 keeps only cells inside the true outline; lower:
   better fit), ties broken by the opened outline's area (smaller: tighter);
3. ``--mask ellipse``: nothing is in the clear, but the outline is the fixed ellipse everyone
   knows: 1 - IoU of the opened outline's cells with the ellipse's (lower: better fit).

Prints, per attack, how often the true key ranks first and its median rank over ``--trials``
true keys per face (ties broken at random: with nothing to go on the rank is uniform, median
~500). No model runs: the metadata is sealed as ``faceanon anonymize`` seals it.

    python benchmarks/public_oracles.py                        # the example photo
    python benchmarks/public_oracles.py --images ../shared/data/celeba-wild/images --limit 10
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from faceanon.errors import FaceanonError
from faceanon.faces.finder import Face, FaceFinder
from faceanon.faces.masks import EllipseMask, LandmarkMask, keep_from_bytes
from faceanon.media.io import read_image
from faceanon.secure.container import FaceRecord, Metadata
from faceanon.secure.keys import SecretKey
from faceanon.secure.seal import open_face

CANDIDATES = 1000


def points_score(outline: LandmarkMask, record: FaceRecord) -> float:
    assert record.points is not None
    jaw = record.points[5:22]  # LANDMARKS_26: the 17 jaw points
    poly = outline.polygon.astype(np.float32)
    distances = [abs(cv2.pointPolygonTest(poly, (float(x), float(y)), True)) for x, y in jaw]
    return float(np.mean(distances))


def keep_score(outline: LandmarkMask, record: FaceRecord) -> float:
    assert record.keep is not None
    keep = keep_from_bytes(record.keep)
    inside = outline.grid(*keep.shape)
    return float((keep & ~inside).sum()) + inside.mean()


def ellipse_score(outline: LandmarkMask, record: FaceRecord) -> float:
    ellipse = EllipseMask().grid(64, 64)
    cells = outline.grid(64, 64)
    return 1.0 - float((cells & ellipse).sum() / max((cells | ellipse).sum(), 1))


def hair_parser(finder: FaceFinder, photo: np.ndarray, face: Face) -> Callable:
    """A parser that marks the landmark outline as face, but its top quarter as hair."""
    polygon = face.geometry.mask
    assert isinstance(polygon, LandmarkMask)
    region = polygon.crop_mask()
    rows = np.flatnonzero(region.any(axis=1))
    region[: rows[0] + (rows[-1] - rows[0]) // 4] = False
    return lambda crop: region


def rank(scores: np.ndarray, rng: np.random.Generator) -> int:
    """The true key's (index 0) rank, 1 = best (lowest score), ties broken at random."""
    order = np.lexsort((rng.random(len(scores)), scores))
    return int(np.flatnonzero(order == 0)[0]) + 1


def attack(
    photo: np.ndarray, face: Face, score: Callable, trials: int, rng: np.random.Generator
) -> list[int]:
    height, width = photo.shape[:2]
    ranks = []
    for _ in range(trials):
        true = SecretKey.generate()
        meta = Metadata(
            "keyflip",
            (FaceRecord(bytes(rng.bytes(16)), face.box),),
            "closed-form",
            None,
            15,
            (width, height),
            cover="box",
        )
        sealed, _ = meta.seal(true, [face.geometry])
        opened = Metadata.from_json(sealed.to_json())
        assert opened.sealed is not None
        nonce, blob = opened.sealed
        keys = [true] + [SecretKey.generate() for _ in range(CANDIDATES - 1)]
        record = opened.faces[0]
        scores = np.array([score(open_face(k, nonce, 0, blob, 256), record) for k in keys])
        ranks.append(rank(scores, rng))
    return ranks


def photos_from(images: Path | None, limit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``limit`` readable photos of the folder ``images`` in a random order, or the example."""
    if images is None:
        return [data.astronaut()]
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    photos: list[np.ndarray] = []
    for i in rng.permutation(len(paths)):
        try:
            photos.append(read_image(paths[i]).image)
        except FaceanonError:
            continue
        if len(photos) == limit:
            break
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="a folder of photos (default: the example)")
    parser.add_argument("--limit", type=int, default=10, help="faces from --images")
    parser.add_argument("--trials", type=int, default=20, help="true keys per face")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = photos_from(args.images, args.limit, rng)
    plain = FaceFinder(recall="standard")
    hinted = FaceFinder(recall="standard", hint="landmarks_26")
    ellipse = FaceFinder(recall="standard", ellipse=True)
    results: dict[str, list[int]] = {"hint points": [], "kept cells": [], "ellipse": []}
    for photo in photos:
        faces = plain.find(photo)
        if not faces:
            continue
        face = faces[0]
        with_points = hinted.at(photo, face.box)
        parsed = FaceFinder(recall="standard", segmenter=hair_parser(plain, photo, face))
        with_keep = parsed.at(photo, face.box)
        results["hint points"] += attack(photo, with_points, points_score, args.trials, rng)
        results["kept cells"] += attack(photo, with_keep, keep_score, args.trials, rng)
        with_ellipse = ellipse.at(photo, face.box)
        results["ellipse"] += attack(photo, with_ellipse, ellipse_score, args.trials, rng)
    for name, ranks in results.items():
        r = np.array(ranks)
        print(
            f"{name}: {len(r)} trials, true key first of {CANDIDATES} in {(r == 1).sum()}"
            f" ({(r == 1).mean():.1%}), median rank {np.median(r):.0f}, top 5 in {(r <= 5).sum()}"
        )


if __name__ == "__main__":
    main()
