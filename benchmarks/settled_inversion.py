"""The early-stopped fixed-point inversion (faceanon.diffusion.loops.SETTLED) against every
iteration run: anonymize and restore the astronaut and the first ``--limit`` photos of a folder
with the default settings and fixed nonces, both ways, and print the time of each direction
and the mean restored face PSNR. Times are ratios within one run (a shared machine).

    python benchmarks/settled_inversion.py --images ../shared/data/celeba-wild/images --limit 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path)
    parser.add_argument("--limit", type=int, default=7)
    args = parser.parse_args()
    from output_hashes import fixed_randomness
    from skimage import data

    import faceanon
    from faceanon.diffusion import loops
    from faceanon.eval.metrics import psnr
    from faceanon.media.io import folder_files, read_image

    photos = [data.astronaut()]
    if args.images is not None:
        photos += [read_image(p).image for p in folder_files(args.images, "")[: args.limit]]
    key = faceanon.SecretKey(bytes(range(16)))
    settled = loops.SETTLED
    with tempfile.TemporaryDirectory() as tmp:
        for label, tolerance in (("every iteration", -1.0), (f"settled {settled:g}", settled)):
            loops.SETTLED = tolerance
            scores, there, back = [], 0.0, 0.0
            for i, photo in enumerate(photos):
                with fixed_randomness():
                    start = time.perf_counter()
                    anon = faceanon.anonymize_photo(photo, key)
                    there += time.perf_counter() - start
                if not anon.boxes:
                    continue
                path = Path(tmp, f"{i}.png")
                faceanon.save_photo(anon, path, overwrite=True)
                start = time.perf_counter()
                restored = faceanon.restore_photo(path, key).image
                back += time.perf_counter() - start
                scores.append(psnr(restored, photo, (anon.image != photo).any(axis=-1)))
            print(
                f"{label}: {len(scores)} photos, anonymize {there:.1f} s, restore {back:.1f} s,"
                f" restored {np.mean(scores):.3f} dB"
            )


if __name__ == "__main__":
    main()
