"""The reconstruction attack on the public-domain example photo (docs/images/attack-examples.png).

Each method of a ``faceanon evaluate --attack reconstruct`` run is applied to skimage's
astronaut (NASA, public domain), and the attacker's network that run trained against it
(``<report>/attack/*.pt``, trained on the attacker's own faces, never on this photo) is applied
to the published face. Top row: what is published; bottom row: what the attacker rebuilds.

    python benchmarks/attack_figure.py reports/celeba-wild-attack \
        --output docs/images/attack-examples.png
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report folder with attack/*.pt")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    from PIL import Image, ImageDraw
    from skimage.data import astronaut

    from faceanon.apps.evaluate import _methods
    from faceanon.eval import attack
    from faceanon.eval.protocols import face_region
    from faceanon.faces.finder import FaceFinder
    from faceanon.media.io import write_atomic

    data = json.loads((args.report / "results.json").read_text())
    config = data["config"]
    b = config["backbone"] or {}  # empty when the report ran only the classic methods
    # The report's attacked methods, made as faceanon evaluate made them (labels "hydro 0.6"
    # are the --method specs "hydro:0.6").
    labels = list(data["results"]["reconstruction_attack"])
    methods, backbone = _methods(
        argparse.Namespace(
            method=[label.replace(" ", ":") for label in labels],
            backbone=b.get("name", "face-prior"),
            model_dir=None,
            device="cpu",
            steps=b.get("steps"),
            paper_mode=b.get("paper_mode", False),
            inversion=b.get("inversion"),
            transform=b.get("transform"),
            seed=config["seed"],
            batch_size=8,
        )
    )
    size = 256 if backbone is None else backbone.image_size
    photo = np.ascontiguousarray(astronaut())
    finder = FaceFinder("yunet", None, size)
    faces = finder.find(photo)
    ys, xs = np.nonzero(face_region(photo.shape, faces))
    cy, cx, half = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2, 90
    box = (cx - half, cy - half, cx + half, cy + half)
    cell, label = 150, 30
    columns = [("original", photo, photo)]
    for method in methods:
        slug = "".join(c if c.isalnum() else "-" for c in method.label)
        model = attack.load(args.report / "attack" / f"{slug}.pt")
        attacked = attack.AttackedMethod(method, model, {})
        out = attacked.run(photo, faces, "astronaut")
        columns.append((method.label, out[method.published], out[attacked.reconstructed]))
        print("done", method.label)
    sheet = Image.new("RGB", (cell * len(columns), label + 2 * cell + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for col, (name, published, rebuilt) in enumerate(columns):
        draw.text((col * cell + 4, 4), name, fill="black")
        for row, image in enumerate((published, rebuilt)):
            tile = Image.fromarray(image).crop(box).resize((cell, cell))
            sheet.paste(tile, (col * cell, label + row * (cell + 16)))
    draw.text(
        (4, label + cell + 2), "published (top) / rebuilt by the attacker (bottom)", fill="black"
    )
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    write_atomic(args.output, buffer.getvalue())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
