"""Grey photos stay grey (issue 26): keyflip on black-and-white photos, e.g. LFW's grey copy.

For the first ``--limit`` photos of a folder (default: the public-domain astronaut in grey):
anonymize with the default settings, write the PNG, restore it with the key, and report, inside
the faces (the pixels anonymization changed): whether the output and the restore are grey
(every pixel's channels within faceanon.media.io.GREY_SPREAD), the colour the faces would have
had (mean spread between a pixel's channels in the coloured face the restore starts from: what
faceanon wrote before), PSNR of the anonymized and the restored face against the original, the
restore's PSNR from the same PNG stripped of its exact face data, and the data's size.

    python benchmarks/grey_photos.py --images ../shared/data/lfw-gray/images --limit 20 \\
        --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
from docsection import publish

START, END = "<!-- grey-photos:start -->", "<!-- grey-photos:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a folder of grey photos")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    from PIL import Image, PngImagePlugin
    from skimage import color, data

    import faceanon
    from faceanon.eval.metrics import psnr
    from faceanon.media.io import folder_files, is_grey, read_image

    grey = (color.rgb2gray(data.astronaut()) * 255).round().astype(np.uint8)
    photos = [("astronaut (grey)", np.repeat(grey[..., None], 3, axis=2))]
    if args.images is not None:
        photos = [(p.name, read_image(p).image) for p in folder_files(args.images, "")]
        photos = photos[: args.limit]
    key = faceanon.SecretKey(bytes(range(16)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, photo in photos:
            if not is_grey(photo):
                print(f"{name}: not grey, skipped")
                continue
            anon = faceanon.anonymize_photo(photo, key)
            face = (anon.image != photo).any(axis=-1)
            if not anon.boxes or not face.any():
                print(f"{name}: no face, skipped")
                continue
            path, stripped = Path(tmp, "a.png"), Path(tmp, "s.png")
            faceanon.save_photo(anon, path, overwrite=True)
            with Image.open(path) as written:
                info = PngImagePlugin.PngInfo()
                info.add_itxt("faceanon", written.text["faceanon"])
                extra = len(written.text.get("faceanon-latents", "")) * 3 // 4
                written.save(stripped, pnginfo=info)
            back = faceanon.restore_photo(path, key).image
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the expected "no exact face data" line
                bare = faceanon.restore_photo(stripped, key).image
            # what faceanon showed before: the model's coloured faces (another nonce)
            with mock.patch("faceanon.media.photos.is_grey", lambda image: False):
                coloured = faceanon.anonymize_photo(photo, key).image
            spread = coloured.max(axis=-1).astype(int) - coloured.min(axis=-1)
            rows.append(
                (
                    is_grey(anon.image),
                    is_grey(back),
                    float(spread[face].mean()),
                    psnr(anon.image, photo, face),
                    psnr(back, photo, face),
                    psnr(bare, photo, face),
                    extra,
                )
            )
            print(f"{name}: " + ", ".join(f"{v:.2f}" for v in rows[-1]), flush=True)
    r = np.array(rows, dtype=np.float64)
    source = args.images if args.images is not None else "the astronaut in grey"
    command = "`python benchmarks/grey_photos.py" + (
        f" --images {args.images} --limit {args.limit}`" if args.images is not None else "`"
    )
    section = (
        f"{START}\n{command}: {len(rows)} grey photos of {source}, face-prior, default"
        " settings. Inside the faces:\n\n"
        "| | value |\n|---|---|\n"
        f"| outputs grey | {int(r[:, 0].sum())} of {len(rows)} |\n"
        f"| restores grey | {int(r[:, 1].sum())} of {len(rows)} |\n"
        f"| colour the faces would have had (mean channel spread, 8-bit levels) |"
        f" {r[:, 2].mean():.1f} |\n"
        f"| anonymized face PSNR | {r[:, 3].mean():.2f} dB |\n"
        f"| restored face PSNR | {r[:, 4].mean():.2f} dB (worst {r[:, 4].min():.2f}) |\n"
        f"| restored without the exact face data | {r[:, 5].mean():.2f} dB |\n"
        f"| exact face data in the PNG | {r[:, 6].mean() / 1024:.1f} kB a photo |\n"
        f"{END}"
    )
    publish(section, args.output, START, END, "Grey photos stay grey (issue 26)")


if __name__ == "__main__":
    main()
