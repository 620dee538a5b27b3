"""Restoring from JPEG: keyflip JPEGs with their faces' exact latents vs PNG and vs the pixels.

For each photo (the public-domain astronaut, and with ``--images DIR`` the first ``--limit``
photos of a folder, e.g. ../shared/data/celeba-wild/images): anonymize with the default
settings (or ``--backbone`` / ``--steps``), write PNG and JPEG at each ``--quality``, restore
each with the key, and measure inside the faces (the pixels anonymization changed): PSNR of
the restore against the original, and SFace's cosine between the restored and the original
face (located on the original, as the evaluation does). "pixels only" is the same JPEG with its
exact face data removed (as a messenger that strips APP segments would): what faceanon did
before. Size: the JPEG with the data against the same JPEG without it.

    python benchmarks/jpeg_restore.py --output docs/benchmarks.md
    python benchmarks/jpeg_restore.py --images ../shared/data/celeba-wild/images --limit 20 \\
        --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from docsection import publish

START, END = "<!-- jpeg-restore:start -->", "<!-- jpeg-restore:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a folder of photos as well")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quality", type=int, nargs="+", default=[95, 85, 75])
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    import warnings

    from skimage import data

    import faceanon
    from faceanon.eval.metrics import psnr
    from faceanon.eval.recognizers import FaceLocator, make_recognizer
    from faceanon.media.io import folder_files, read_image
    from faceanon.media.latents import split_jpeg

    photos = [("astronaut", data.astronaut())]
    if args.images is not None:
        for path in folder_files(args.images, "")[: args.limit]:
            photos.append((path.name, read_image(path).image))
    key = faceanon.SecretKey(bytes(range(16)))
    settings = faceanon.Settings(backbone=args.backbone, steps=args.steps)
    locator, sface = FaceLocator(), make_recognizer("sface")
    kinds = ["PNG"] + [f"JPEG q{q} {w}" for q in args.quality for w in ("with data", "pixels")]
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    sizes: dict[int, list[tuple[int, int]]] = {q: [] for q in args.quality}
    anonymized: list[float] = []
    used = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, photo in photos:
            anon = faceanon.anonymize_photo(photo, key, settings)
            face = (anon.image != photo).any(axis=-1)
            located = locator(photo)
            if not anon.boxes or not face.any() or located is None:
                print(f"{name}: no face, skipped")
                continue
            used += 1
            points = sface.points(photo, located)
            reference = sface.embed(photo, points)

            def score(image: np.ndarray) -> tuple[float, float]:
                cosine = float(reference @ sface.embed(image, points))  # noqa: B023
                return psnr(image, photo, face), cosine  # noqa: B023

            anonymized.append(score(anon.image)[0])
            files = {"PNG": Path(tmp, "a.png")}
            faceanon.save_photo(anon, files["PNG"], overwrite=True)
            for q in args.quality:
                with_data = Path(tmp, f"a{q}.jpg")
                faceanon.save_photo(anon, with_data, overwrite=True, quality=q)
                plain = split_jpeg(with_data.read_bytes())[0]
                Path(tmp, f"p{q}.jpg").write_bytes(plain)
                sizes[q].append((with_data.stat().st_size, len(plain)))
                files[f"JPEG q{q} with data"] = with_data
                files[f"JPEG q{q} pixels"] = Path(tmp, f"p{q}.jpg")
            for kind, path in files.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "pixels": the expected fallback note
                    back = faceanon.restore_photo(path, key).image
                scores[kind].append(score(back))
            line = ", ".join(f"{k} {v[-1][0]:.2f}" for k, v in scores.items())
            print(f"{name}: anonymized {anonymized[-1]:.2f} dB; restored {line}", flush=True)

    model = settings.backbone or faceanon.DEFAULT_BACKBONE
    jpeg_info = io.StringIO()
    for q in args.quality:
        ratio = [w / p for w, p in sizes[q]]
        extra = [(w - p) / 1024 for w, p in sizes[q]]
        jpeg_info.write(
            f"| q{q} | {np.mean([p for _, p in sizes[q]]) / 1024:.1f} kB | "
            f"+{np.mean(extra):.1f} kB (max {max(extra):.1f}) | "
            f"{np.mean(ratio):.3f}x (max {max(ratio):.3f}x) |\n"
        )
    rows = "".join(
        f"| {kind} | {np.mean([p for p, _ in v]):.2f} | {np.min([p for p, _ in v]):.2f} | "
        f"{np.mean([c for _, c in v]):.3f} |\n"
        for kind, v in scores.items()
    )
    sources = "the astronaut" + (
        f" and {used - 1} photos of {args.images}" if args.images is not None else ""
    )
    section = (
        f"{START}\n"
        f"`python benchmarks/jpeg_restore.py"
        + (f" --images {args.images} --limit {args.limit}" if args.images else "")
        + (f" --backbone {args.backbone}" if args.backbone else "")
        + (f" --steps {args.steps}" if args.steps else "")
        + f"`: {used} photos ({sources}), {model}, default settings otherwise. Inside the "
        f"faces (anonymized: {np.mean(anonymized):.2f} dB mean):\n\n"
        "| restored from | PSNR mean (dB) | PSNR worst | SFace cosine to the original |\n"
        "|---|---|---|---|\n"
        f"{rows}\n"
        "Size of the exact face data (the JPEG with it against the same JPEG without):\n\n"
        "| quality | JPEG without | data | with / without |\n|---|---|---|---|\n"
        f"{jpeg_info.getvalue()}"
        f"{END}"
    )
    publish(section, args.output, START, END, "Restoring from JPEG (issue 28)")


if __name__ == "__main__":
    main()
