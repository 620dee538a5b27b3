"""The README's picture: the example photo original | anonymized | de-anonymized | wrong key.

    python scripts/make_readme_figure.py -o docs/images/astronaut-face-prior.png

Made with the embedded ``face-prior`` backbone and its defaults (the faces shown denoised, the
restores from the exact faces, as the files carry them); a fixed demo key and nonce so that
the picture is reproducible (never do this with real photos: real runs draw a fresh nonce per
face). The wrong key is the demo key with one bit flipped. Prints the PSNR inside the face
polygon of each panel against the original.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from faceanon.anonymizer import Anonymizer
from faceanon.backbones.registry import load_backbone
from faceanon.faces.finder import FaceFinder
from faceanon.faces.replace import keyflip, transform_photos
from faceanon.secure.keys import SecretKey

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


def face_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    diff = a[region].astype(np.float64) - b[region].astype(np.float64)
    return float(10 * np.log10(255.0**2 / max((diff**2).mean(), 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--backbone", default="face-prior")
    args = parser.parse_args()
    import cv2

    photo = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    backbone = load_backbone(args.backbone)
    anonymizer = Anonymizer(backbone)
    key = SecretKey(bytes(range(16)))
    wrong = SecretKey(bytes([1]) + bytes(range(1, 16)))
    faces = FaceFinder().find(photo)
    geometry = [[f.geometry for f in faces]]
    nonces = [[bytes([7]) * 16 for _ in faces]]
    grid = backbone.latent_shape[1:]

    def run(image: np.ndarray, k: SecretKey, undo: bool) -> np.ndarray:
        change = keyflip(anonymizer, k, 4, undo=undo)
        return transform_photos([image], geometry, nonces, change, grid)[0]

    # The photo as shown (the faces denoised, faceanon.methods.display) and with the exact
    # faces its file carries, which the restores start from.
    plain: list[np.ndarray] = []
    shown = keyflip(anonymizer, key, 4, plain=plain)
    anon = transform_photos([photo], geometry, nonces, shown, grid)[0]
    exact = anon
    if plain:
        exact = transform_photos([photo], geometry, nonces, lambda c, *_: plain[: len(c)], grid)[0]
    back = run(exact, key, True)
    bad = run(exact, wrong, True)
    region = np.zeros(photo.shape[:2], bool)
    for g in geometry[0]:
        polygon = g.alignment.to_photo(g.mask.polygon).astype(np.int32)  # type: ignore[attr-defined]
        mask = np.zeros(photo.shape[:2], np.uint8)
        cv2.fillPoly(mask, [polygon], 1)
        region |= mask.astype(bool)
    panels = [
        ("original", photo),
        ("anonymized", anon),
        ("de-anonymized", back),
        ("wrong key", bad),
    ]
    for name, image in panels[1:]:
        print(f"{name}: PSNR in the face {face_psnr(image, photo, region):.1f} dB")
    # Top row: the photos; bottom row: the face, enlarged.
    x0, y0, x1, y1 = faces[0].box
    side = 1.6 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    w = 256
    sheet = Image.new("RGB", (4 * w, 2 * w + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, image) in enumerate(panels):
        sheet.paste(Image.fromarray(image).resize((w, w), Image.LANCZOS), (i * w, 24))
        crop = Image.fromarray(image).crop(box).resize((w, w), Image.LANCZOS)
        sheet.paste(crop, (i * w, 24 + w))
        draw.text((i * w + 6, 6), name, fill="black")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
