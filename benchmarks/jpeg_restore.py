"""Restoring from JPEG and WebP: keyflip outputs with their faces' exact latents vs PNG and
vs the pixels.

For each photo (the public-domain astronaut, and with ``--images DIR`` the first ``--limit``
photos of a folder, e.g. ../shared/data/celeba-wild/images): anonymize with the default
settings (or ``--backbone`` / ``--steps``), write PNG, and JPEG and WebP at each
``--quality``, restore each with the key, and measure inside the faces (the pixels
anonymization changed): PSNR of the restore against the original, and SFace's cosine between
the restored and the original face (located on the original, as the evaluation does). "pixels"
is the same file with its exact face data removed (as a messenger that strips APP segments or
unknown chunks would): what faceanon did before. Size: the file with the data against the
same file without it.

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
FORMATS = {"JPEG": ".jpg", "WebP": ".webp"}


def without_data(data: bytes, fmt: str) -> bytes:
    from faceanon.media import webp
    from faceanon.media.latents import split_jpeg

    return split_jpeg(data)[0] if fmt == "JPEG" else webp.remove_chunks(data, [webp.LATENTS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a folder of photos as well")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quality", type=int, nargs="+", default=[95, 85, 75])
    parser.add_argument("--formats", nargs="+", default=["JPEG", "WebP"], choices=FORMATS)
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    import warnings

    from skimage import data

    import faceanon
    from faceanon.eval.metrics import psnr
    from faceanon.eval.recognizers import FaceLocator, make_recognizer
    from faceanon.media.io import folder_files, read_image

    photos = [("astronaut", data.astronaut())]
    if args.images is not None:
        for path in folder_files(args.images, "")[: args.limit]:
            photos.append((path.name, read_image(path).image))
    key = faceanon.SecretKey(bytes(range(16)))
    settings = faceanon.Settings(backbone=args.backbone, steps=args.steps)
    locator, sface = FaceLocator(), make_recognizer("sface")
    lossy = [(f, q) for f in args.formats for q in args.quality]
    kinds = ["PNG"] + [f"{f} q{q} {w}" for f, q in lossy for w in ("with data", "pixels")]
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    sizes: dict[tuple[str, int], list[tuple[int, int]]] = {fq: [] for fq in lossy}
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
            for fmt, q in lossy:
                with_data = Path(tmp, f"a{q}{FORMATS[fmt]}")
                faceanon.save_photo(anon, with_data, overwrite=True, quality=q)
                plain = without_data(with_data.read_bytes(), fmt)
                Path(tmp, f"p{q}{FORMATS[fmt]}").write_bytes(plain)
                sizes[fmt, q].append((with_data.stat().st_size, len(plain)))
                files[f"{fmt} q{q} with data"] = with_data
                files[f"{fmt} q{q} pixels"] = Path(tmp, f"p{q}{FORMATS[fmt]}")
            for kind, path in files.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "pixels": the expected fallback note
                    back = faceanon.restore_photo(path, key).image
                scores[kind].append(score(back))
            line = ", ".join(f"{k} {v[-1][0]:.2f}" for k, v in scores.items())
            print(f"{name}: anonymized {anonymized[-1]:.2f} dB; restored {line}", flush=True)

    model = settings.backbone or faceanon.DEFAULT_BACKBONE
    size_info = io.StringIO()
    for fmt, q in lossy:
        ratio = [w / p for w, p in sizes[fmt, q]]
        extra = [(w - p) / 1024 for w, p in sizes[fmt, q]]
        size_info.write(
            f"| {fmt} q{q} | {np.mean([p for _, p in sizes[fmt, q]]) / 1024:.1f} kB | "
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
        + (f" --formats {' '.join(args.formats)}" if args.formats != list(FORMATS) else "")
        + f"`: {used} photos ({sources}), {model}, default settings otherwise. Inside the "
        f"faces (anonymized: {np.mean(anonymized):.2f} dB mean):\n\n"
        "| restored from | PSNR mean (dB) | PSNR worst | SFace cosine to the original |\n"
        "|---|---|---|---|\n"
        f"{rows}\n"
        "Size of the exact face data (the file with it against the same file without):\n\n"
        "| file | without | data | with / without |\n|---|---|---|---|\n"
        f"{size_info.getvalue()}"
        f"{END}"
    )
    publish(section, args.output, START, END, "Restoring from JPEG and WebP (issue 28)")


if __name__ == "__main__":
    main()
