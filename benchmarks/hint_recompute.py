"""What recomputing the mask and hint from the anonymized face costs (the authors' way), with a
stand-in for their ControlNets.

The authors' de-anonymization finds the face mask (their ControlNet's hint and the latent mask)
and the landmark hint anew on the *anonymized* face; faceanon stores both with the output. No
ControlNet weights are available here, so the embedded ``face-prior`` backbone stands in for the
generator (it is not conditioned on the hint: a conditioned model keeps the landmarks closer,
so the landmark numbers below are an upper bound on their drift). Per face, anonymized with
dlib's landmark mask:

- mask IoU: the 256 px mask of the original face vs the one found on the anonymized face (the
  segmentation-mask hint's agreement); latent cells that differ on the 64 x 64 grid;
- landmark drift: mean distance (crop px) between the five hint points (nose, eyes, mouth
  corners) of the original and of the anonymized face, and the fraction of the 3 x 3 squares
  that no longer overlap;
- face PSNR of the restore with the stored mask vs with the recomputed one (same key, same
  stored alignment: only the mask differs).

    python benchmarks/hint_recompute.py ../shared/data/celebahq-samples --limit 20 \\
        --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from docsection import publish

START, END = "<!-- hint-recompute:start -->", "<!-- hint-recompute:end -->"


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    diff = a.astype(np.float64)[where] - b.astype(np.float64)[where]
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))


def _photo_region(geometry, shape) -> np.ndarray:
    import cv2

    canvas = np.zeros(shape[:2], np.uint8)
    for g in geometry:
        polygon = g.alignment.to_photo(g.mask.polygon)
        cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32)], 1)
    return canvas.astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a folder of face photos (jpg/png)")
    parser.add_argument("--limit", type=int, default=20, help="photos to use (sorted by name)")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    from PIL import Image

    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.registry import load_backbone
    from faceanon.faces.align import warp_to_crop
    from faceanon.faces.finder import FaceFinder
    from faceanon.faces.hints import hint_points
    from faceanon.faces.masks import LandmarkMask
    from faceanon.media import photos
    from faceanon.secure.container import Geometry, Metadata
    from faceanon.secure.keys import SecretKey

    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    files = files[: args.limit]
    backbone = load_backbone("face-prior")
    anonymizer = Anonymizer(backbone)
    finder = FaceFinder(size=backbone.image_size)
    key = SecretKey.generate()
    rows = []
    started = time.perf_counter()
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        faces = finder.find(image)
        if not faces:
            continue
        out = photos.anonymize([image], [faces], "keyflip", anonymizer=anonymizer, key=key)[0]
        meta = Metadata.from_json(out.metadata)
        _, stored = photos.restore_geometry(path, out.image, meta, key, 256, lambda: finder)
        recomputed = []
        for g, record in zip(stored, meta.faces, strict=True):
            # The authors' way: landmarks (and with them mask and hint) of the anonymized face.
            crop_original = warp_to_crop(image, g.alignment)
            crop_anonymized = warp_to_crop(out.image, g.alignment)
            box = (51.2, 71.7, 204.8, 225.3)  # hints.CROP_FACE_BOX at 256 px
            before = finder.landmarks(crop_original, box)
            after = finder.landmarks(crop_anonymized, box)
            mask_after = LandmarkMask.from_landmarks(after, 256)
            a, b = g.mask.crop_mask(), mask_after.crop_mask()
            cells_a, cells_b = (
                g.mask.grid(*backbone.latent_shape[1:]),
                mask_after.grid(*backbone.latent_shape[1:]),
            )
            p0, p1 = hint_points(before, "landmarks_5"), hint_points(after, "landmarks_5")
            drift = np.hypot(*(p1 - p0).T)
            rows.append(
                {
                    "iou": float((a & b).sum() / max((a | b).sum(), 1)),
                    "cells": float((cells_a != cells_b).mean()),
                    "drift": float(drift.mean()),
                    "apart": float((np.abs(np.floor(p1) - np.floor(p0)) > 2).any(axis=1).mean()),
                    "record": record,
                }
            )
            recomputed.append(Geometry(g.alignment, mask_after))
        restored = photos.restore([(out.image, meta, backbone, stored)], key)[0].image
        redone = photos.restore([(out.image, meta, backbone, recomputed)], key)[0].image
        region = _photo_region(stored, image.shape)
        for row in rows[-len(stored) :]:
            row["psnr_stored"] = _psnr(restored, image, region)
            row["psnr_recomputed"] = _psnr(redone, image, region)
            row["psnr_anonymized"] = _psnr(out.image, image, region)
        print(
            f"{path.name}: {rows[-1]['psnr_stored']:.1f} / {rows[-1]['psnr_recomputed']:.1f} dB",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - started

    grid = backbone.latent_shape[1:]

    def mean(field: str) -> float:
        return float(np.mean([r[field] for r in rows]))

    command = (
        f"python benchmarks/hint_recompute.py {args.data} --limit {args.limit}"
        " --output docs/benchmarks.md"
    )
    section = "\n".join(
        [
            START,
            f"`{command}` ({len(rows)} faces, face-prior stand-in, {elapsed:.0f} s)",
            "",
            "| | stored with the output (faceanon) |"
            " found again on the anonymized face (authors) |",
            "|---|---|---|",
            f"| face mask IoU with the original's (256 px) | 1.000 | {mean('iou'):.3f} |",
            f"| latent cells that differ ({grid[0]} x {grid[1]} grid) | 0.0% |"
            f" {100 * mean('cells'):.1f}% |",
            f"| 5-point hint: mean drift (crop px) | 0 | {mean('drift'):.1f} |",
            f"| 5-point hint: faces with a square moved > 2 px | 0% | {100 * mean('apart'):.0f}% |",
            f"| restored face PSNR (dB; anonymized {mean('psnr_anonymized'):.1f}) |"
            f" {mean('psnr_stored'):.1f} | {mean('psnr_recomputed'):.1f} |",
            END,
        ]
    )
    publish(section, args.output, START, END, heading="Hints stored vs found again (issue 14)")


if __name__ == "__main__":
    main()
