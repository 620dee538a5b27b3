"""Can the anonymized image itself check a key guess? (issue 27, oracle 3)

Every key opens the metadata into some plausible face region, but only the true key's region
is where the new face was pasted: its border may show as a seam (a jump in the picture) or as a
change of sharpness (a 64-px model face inside, the photo's own detail outside). The attack:
anonymize a photo with a true key, open the metadata with it and 999 other keys, and score each
candidate's region on the anonymized image alone:

- ``seam``: mean gradient magnitude (luma) on the band where the candidate's paste weight is
  between 0.1 and 0.9 (higher: more seam-like);
- ``sharpness``: mean |Laplacian| in a 6-px ring just outside the candidate's region minus in the
  ring just inside (higher: sharp outside, smooth inside).

Prints, per backbone and score, in each direction (the attacker learns which one works from
anonymizations of their own), how often the true key ranks first of 1,000, its median rank
(chance: ~500) and a 95% bootstrap interval of the median.

    python benchmarks/seam_oracle.py --backbone face-prior --backbone face-net --trials 10
    python benchmarks/seam_oracle.py --images ../shared/data/celeba-wild/images --limit 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from public_oracles import photos_from

from faceanon.anonymizer import Anonymizer
from faceanon.backbones.registry import load_backbone
from faceanon.faces.align import warp_to_crop
from faceanon.faces.finder import FaceFinder
from faceanon.faces.masks import feathered
from faceanon.faces.replace import FEATHER
from faceanon.media.photos import anonymize
from faceanon.secure.container import Geometry, Metadata
from faceanon.secure.keys import SecretKey

CANDIDATES = 1000
RING = 6


def scores(crop: np.ndarray, g: Geometry, grid: tuple[int, int]) -> tuple[float, float]:
    size = g.alignment.size
    weight = feathered(g.mask, grid, size, radius=FEATHER * size)
    luma = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(luma, cv2.CV_32F, 1, 0), cv2.Sobel(luma, cv2.CV_32F, 0, 1))
    band = (weight > 0.1) & (weight < 0.9)
    seam = float(gradient[band].mean()) if band.any() else 0.0
    region = (weight >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING + 1, 2 * RING + 1))
    outside = cv2.dilate(region, kernel).astype(bool) & ~region.astype(bool)
    inside = region.astype(bool) & ~cv2.erode(region, kernel).astype(bool)
    laplacian = np.abs(cv2.Laplacian(luma, cv2.CV_32F))
    if not (outside.any() and inside.any()):
        return seam, 0.0
    return seam, float(laplacian[outside].mean() - laplacian[inside].mean())


def rank(values: np.ndarray, rng: np.random.Generator) -> int:
    """The true key's (index 0) rank, 1 = highest score, ties broken at random."""
    order = np.lexsort((rng.random(len(values)), -values))
    return int(np.flatnonzero(order == 0)[0]) + 1


def median_interval(ranks: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    boot = [np.median(rng.choice(ranks, len(ranks))) for _ in range(2000)]
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", help="default: face-prior")
    parser.add_argument("--images", type=Path, help="a folder of photos (default: the example)")
    parser.add_argument("--limit", type=int, default=10, help="photos from --images")
    parser.add_argument("--trials", type=int, default=10, help="true keys per photo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = photos_from(args.images, args.limit, rng)
    finder = FaceFinder(recall="standard")
    found = [(photo, faces[:1]) for photo in photos if (faces := finder.find(photo))]
    for name in args.backbone or ["face-prior"]:
        anonymizer = Anonymizer(load_backbone(name))
        grid: tuple[int, int] = tuple(anonymizer.backbone.latent_shape[1:])  # type: ignore[assignment]
        ranks: dict[str, list[int]] = {}
        for photo, faces in found:
            for _ in range(args.trials):
                true = SecretKey.generate()
                [out] = anonymize([photo], [faces], "keyflip", anonymizer=anonymizer, key=true)
                meta = Metadata.from_json(out.metadata)
                keys = [true] + [SecretKey.generate() for _ in range(CANDIDATES - 1)]
                opened = [meta.open(k, 256)[0] for k in keys]  # type: ignore[index]
                crop = warp_to_crop(out.image, opened[0].alignment)  # public: the same for all
                values = np.array([scores(crop, g, grid) for g in opened])
                for i, score in enumerate(("seam", "sharpness")):
                    for sign, direction in ((1, "high"), (-1, "low")):
                        r = rank(sign * values[:, i], rng)
                        ranks.setdefault(f"{score} ({direction})", []).append(r)
        for score, values_ in ranks.items():
            r = np.array(values_)
            low, high = median_interval(r, rng)
            print(
                f"{name} {score}: {len(r)} trials, true key first of {CANDIDATES} in"
                f" {(r == 1).sum()} ({(r == 1).mean():.1%}), median rank {np.median(r):.0f}"
                f" (95% interval {low:.0f}-{high:.0f}), top 10 in {(r <= 10).sum()}"
            )


if __name__ == "__main__":
    main()
