"""How much of every counted face the output covers (issue 32): before and after widening.

    python benchmarks/coverage.py --photos ../shared/data/celeba-wild/images \
        --checked benchmarks/celeba_wild_faces.json
    python benchmarks/coverage.py --synthetic      # recall.py's hard synthetic cases

For every face the default search finds on the hand-checked celeba-wild photos, the share of
its detection box (clipped to the photo) that the paste replaces (weight >= 1/2), for the
classic methods (the mask on the 256-px crop) and for keyflip (the polygon as the key opens it
from the seal, on the 64 x 64 latent grid), with the landmark outline alone (faceanon 0.2,
``cover=None``) and grown over the public detection box (``cover=box``, now). Prints the faces
still under 90%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from faceanon.faces.finder import FaceFinder
from faceanon.faces.replace import COVERED, box_coverage
from faceanon.media.io import read_image
from faceanon.secure.container import FaceRecord, Metadata, cover_box
from faceanon.secure.keys import SecretKey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="the celeba-wild images folder")
    parser.add_argument("--checked", type=Path, help="celeba_wild_faces.json")
    parser.add_argument(
        "--synthetic", action="store_true", help="recall.py's hard synthetic cases instead"
    )
    args = parser.parse_args()
    key = SecretKey(bytes(16))
    rows: dict[str, list[float]] = {}
    low: list[str] = []
    finder = FaceFinder()
    if args.synthetic:
        from recall import cases

        photos = [(f"{c.category} #{i}", c.photo) for i, c in enumerate(cases())]
    else:
        checked = json.loads(args.checked.read_text())
        photos = [
            (e["image"], read_image(args.photos / e["image"]).image) for e in checked["photos"]
        ]
    for name, image in photos:
        faces = finder.find(image)
        if not faces:
            continue
        for cover in (None, "box"):  # faceanon 0.2, and now
            records = tuple(FaceRecord(bytes(16), f.box) for f in faces)
            meta = Metadata(
                "keyflip", records, "face-prior", None, 50, image.shape[1::-1], cover=cover
            )
            _, opened = meta.seal(key, [f.geometry for f in faces], bytes(16))
            for f, g in zip(faces, opened, strict=True):
                region = f.geometry if cover is None else cover_box(f.geometry, f.box)
                classic = box_coverage(region, f.box, image.shape)
                keyed = box_coverage(g, f.box, image.shape, (64, 64))
                rows.setdefault(f"classic, cover={cover}", []).append(classic)
                rows.setdefault(f"keyflip, cover={cover}", []).append(keyed)
                if cover and min(classic, keyed) < COVERED:
                    box = ", ".join(f"{v:.0f}" for v in f.box)
                    low.append(f"{name} box ({box}): {classic:.0%} / {keyed:.0%}")
    print("| method, region | faces | under 90% | min | median |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        print(f"| {name} | {len(v)} | {(v < COVERED).sum()} | {v.min():.0%} | {np.median(v):.0%} |")
    for line in low:
        print("under 90% (classic / keyflip):", line)


if __name__ == "__main__":
    main()
