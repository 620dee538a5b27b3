"""Fit the Gaussian prior of the sealed face polygon (faceanon/secure/seal.py) on real face crops.

    python scripts/fit_geometry_prior.py ../shared/data/faces64 \
        -o src/faceanon/data/geometry_prior.json

Each crop (64x64, from ``faces64``: UTKFace and CelebA, non-commercial research use) is
enlarged to 256 px, framed with reflected borders so the face does not fill the image, rolled
by a random angle (normal, 12 degrees: the crops are eye-levelled, photos are not), and run
through faceanon's own face finder; the 32 polygon radii of the face nearest the centre are
collected. The output holds only their mean and covariance factor (no image, no face).
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceanon.faces.finder import FaceFinder
from faceanon.secure.seal import PARAMS, to_params

ROLL_DEGREES = 12.0


def crops(folder: Path, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    names = []
    for shard in sorted(folder.glob("faces64-*.zip")):
        with zipfile.ZipFile(shard) as z:
            names += [(shard, n) for n in z.namelist() if n.endswith(".jpg")]
    picked = sorted(rng.choice(len(names), size=min(count, len(names)), replace=False))
    out = []
    for i in picked:
        shard, name = names[i]
        with zipfile.ZipFile(shard) as z:
            out.append(np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB")))
    return out


def params_of(finder: FaceFinder, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    framed = cv2.copyMakeBorder(big, 96, 96, 96, 96, cv2.BORDER_REFLECT_101)
    angle = float(rng.normal(0.0, ROLL_DEGREES))
    centre = (framed.shape[1] / 2, framed.shape[0] / 2)
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    photo = cv2.warpAffine(framed, turn, framed.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
    faces = finder.find(photo)
    if not faces:
        return None

    def distance(face: object) -> float:
        x0, y0, x1, y1 = face.box  # type: ignore[attr-defined]
        return float(np.hypot((x0 + x1) / 2 - centre[0], (y0 + y1) / 2 - centre[1]))

    face = min(faces, key=distance)
    return to_params(face.geometry.mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces64", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    finder = FaceFinder(sideways=False)
    rows = [
        p
        for c in crops(args.faces64, args.count, rng)
        if (p := params_of(finder, c, rng)) is not None
    ]
    data = np.array(rows)
    mean = data.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(data, rowvar=False))
    order = values.argsort()[::-1][:PARAMS]
    basis = vectors[:, order] * np.sqrt(values[order])  # components scaled by their sd
    kept = values[order].sum() / values.sum()
    out = {
        "what": "Gaussian prior of the radii of faceanon's sealed face polygon"
        " (faceanon/secure/seal.py):"
        f" mean and the {PARAMS} principal components scaled by their standard deviations",
        "fitted_on": f"{len(rows)} of {args.count} faces64 crops (seed {args.seed}), "
        f"roll N(0, {ROLL_DEGREES} deg)",
        "variance_kept": round(float(kept), 5),
        "licence": "derived from UTKFace and CelebA: non-commercial research use only",
        "rebuild": "python scripts/fit_geometry_prior.py ../shared/data/faces64 "
        "-o src/faceanon/data/geometry_prior.json",
        "mean": [round(float(v), 8) for v in mean],
        "basis": [[round(float(v), 8) for v in row] for row in basis],
    }
    args.output.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} faces -> {args.output}")
    print("radii mean", np.round(mean, 3))
    print(f"variance kept by {PARAMS} components: {kept:.4f}")


if __name__ == "__main__":
    main()
