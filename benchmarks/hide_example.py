"""``--method hide`` on the public-domain example photo (skimage's astronaut, NASA): the
original, keyflip's face, hide's face at several guide scales (the same key and nonce: the
same unguided face underneath), and the restore; each with the cosine to the original of the
guided recognizer (SFace) and of two it was not guided by (ArcFace, dlib), on the aligned crop.

    python benchmarks/hide_example.py --output docs/images/hide-example.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="the figure (.png)")
    parser.add_argument("--scales", type=float, nargs="+", default=[10, 20, 40, 80])
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from skimage.data import astronaut

    from faceanon.anonymizer import Anonymizer, to_tensor
    from faceanon.eval.recognizers import DlibRecognizer, FaceLocator
    from faceanon.faces.align import warp_to_crop
    from faceanon.faces.torch_recognizers import crop_recognizer
    from faceanon.loading import backbone, face_finder
    from faceanon.secure.keys import SecretKey

    photo = np.ascontiguousarray(astronaut())
    [face] = face_finder(recall="standard").find(photo)
    crop = warp_to_crop(photo, face.geometry.alignment)
    anonymizer = Anonymizer(backbone("face-prior", "cpu", None))
    key, nonces, masks = SecretKey(bytes(range(16))), [b"example-nonce-01"], [face.geometry.mask]
    columns = [("original", crop)]
    for scale in args.scales:
        plain, guided = anonymizer.hide([crop], key, masks, nonces, "sface", scale)
        if len(columns) == 1:
            columns.append(("keyflip (scale 0)", plain[0]))
        columns.append((f"hide, scale {scale:g}", guided[0]))
    restored = anonymizer.apply([columns[1][1]], key, masks, nonces, undo=True)[0]
    columns.append(("restored with the key", restored))

    crops = [image for _, image in columns]
    with torch.no_grad():
        scores = {
            name: crop_recognizer(name)(to_tensor(crops, 256)).numpy()
            for name in ("sface", "arcface")
        }
    dlib = DlibRecognizer()
    located = FaceLocator()(crop)
    if located is not None:
        points = dlib.points(crop, located)
        scores["dlib"] = np.stack([dlib.embed(c, points) for c in crops])
    figure, axes = plt.subplots(1, len(columns), figsize=(2.3 * len(columns), 2.9))
    for i, (ax, (title, image)) in enumerate(zip(axes, columns, strict=True)):
        ax.imshow(image)
        ax.set_axis_off()
        cosines = " ".join(f"{n[:2]} {float(e[0] @ e[i]):.2f}" for n, e in scores.items())
        ax.set_title(f"{title}\n{cosines}", fontsize=7)
        print(f"{title}: " + ", ".join(f"{n} {float(e[0] @ e[i]):.3f}" for n, e in scores.items()))
    figure.suptitle(
        "cosine to the original: sf = SFace (guided), ar = ArcFace, dl = dlib (not guided)",
        fontsize=8,
    )
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
