"""Where the five face points (eyes, nose tip, mouth corners) fall in faceanon's aligned crop:
YuNet's points on the crops of CelebA-in-the-wild photos, averaged (the fixed crop-to-template
map of :mod:`faceanon.faces.torch_recognizers`, ``CROP_POINTS``).

    python benchmarks/crop_points.py ../shared/data/celeba-wild --limit 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder with images/ (celeba-wild)")
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()

    from faceanon.faces.align import warp_to_crop
    from faceanon.faces.detect import YuNetDetector
    from faceanon.loading import face_finder
    from faceanon.media.io import read_image

    finder = face_finder(recall="standard")
    detector = YuNetDetector(0.5)
    points = []
    for path in sorted((args.data / "images").glob("*.jpg"))[: args.limit]:
        photo = read_image(path).image
        faces = finder.find(photo)
        if not faces:
            continue
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        crop = warp_to_crop(photo, face.geometry.alignment)
        rows = detector.rows(crop)
        if len(rows):
            row = max(rows, key=lambda r: r[2] * r[3])
            points.append(np.asarray(row[4:14], np.float64).reshape(5, 2) / crop.shape[0])
    stack = np.stack(points)
    print(f"{len(stack)} crops; mean five points in crop sides (sd in px at 256 px):")
    for mean, sd in zip(stack.mean(0), stack.std(0) * 256, strict=True):
        print(f"  [{mean[0]:.4f}, {mean[1]:.4f}]  sd {sd[0]:.1f}, {sd[1]:.1f} px")


if __name__ == "__main__":
    main()
