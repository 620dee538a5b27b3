"""Time per face of everything around the diffusion model, as a share of the diffusion time.

Stages, each timed separately on CPU: detection (YuNet upright and at two quarter turns, as
the pipeline does by default; per photo, divided among its faces),
68 landmarks, FFHQ alignment + warp to the crop, landmark mask + latent grid + feathered
weights, paste-back. The diffusion time per face of the reference-size backbone (random
weights, same architecture as ldm-celebahq-256) is estimated in the same process from timed
calls: 2T UNet calls + one encode + one decode at batch 1.

    python benchmarks/bench_faces.py                          # public-domain photos only
    python benchmarks/bench_faces.py --images ../shared/data/celeba-wild/images --limit 200

Results replace the faces section of docs/benchmarks.md (--output).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from docsection import publish

START, END = "<!-- faces-benchmark:start -->", "<!-- faces-benchmark:end -->"
STAGES = ("detect", "landmarks", "align+warp", "mask", "paste")


def _photos(folder: Path | None, limit: int) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import composite  # astronaut copies at several sizes

    photos = [("astronaut", data.astronaut()), ("composite", composite()[0])]
    if folder is not None:
        from faceanon.media.io import read_image

        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        photos = [(p.name, read_image(p).image) for p in files[:limit]]
    return photos


def face_stages(photos: list[tuple[str, np.ndarray]]) -> tuple[dict[str, list[float]], int]:
    from faceanon.faces.align import ffhq_alignment, warp_to_crop
    from faceanon.faces.blend import paste_back
    from faceanon.faces.detect import detect_turned, make_detector
    from faceanon.faces.landmarks import Dlib68
    from faceanon.faces.masks import LandmarkMask, feathered

    detector, landmarks = make_detector(), Dlib68()
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    faces = 0
    detector.detect(photos[0][1])  # warm-up
    for _, photo in photos:
        start = time.perf_counter()
        found = detect_turned(detector, photo)
        detect_s = time.perf_counter() - start
        out = photo
        for d in found:
            faces += 1
            times["detect"].append(detect_s / len(found))
            t0 = time.perf_counter()
            points = landmarks(photo, d.box)  # (upright faces; turned ones cost the same)
            t1 = time.perf_counter()
            alignment = ffhq_alignment(points)
            crop = warp_to_crop(photo, alignment)
            t2 = time.perf_counter()
            mask = LandmarkMask.from_landmarks(alignment.to_crop(points), 256)
            mask.grid(64, 64)
            weight = feathered(mask, (64, 64), 256, 4)
            t3 = time.perf_counter()
            out = paste_back(out, crop, alignment, weight)
            t4 = time.perf_counter()
            for stage, seconds in zip(
                STAGES[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True
            ):
                times[stage].append(seconds)
    return times, faces


def diffusion_seconds(steps: int, calls: int) -> tuple[float, float]:
    """(estimated seconds per face, median UNet call) for the reference-size backbone."""
    import torch

    from faceanon.backbones.registry import load_backbone

    backbone = load_backbone("reference-random")
    x = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
    with torch.inference_mode():
        z = backbone.encode(x)
        backbone.eps(z, 500)  # warm-up

        def timed(fn):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        unet = statistics.median(timed(lambda: backbone.eps(z, 500)) for _ in range(calls))
        encode = timed(lambda: backbone.encode(x))
        decode = timed(lambda: backbone.decode(z))
    return 2 * steps * unet + encode + decode, unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a folder of photos (default: public domain)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--unet-calls", type=int, default=5)
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    import torch

    photos = _photos(args.images, args.limit)
    times, faces = face_stages(photos)
    per_face = {s: statistics.mean(v) for s, v in times.items()}
    total = sum(per_face.values())
    diffusion, unet = diffusion_seconds(args.steps, args.unet_calls)
    source = str(args.images) if args.images else "skimage astronaut + 4-face composite"
    options = f" --images {args.images} --limit {args.limit}" if args.images else ""
    lines = [
        START,
        f"`python benchmarks/bench_faces.py{options}` — {len(photos)} photos ({source}), "
        f"{faces} faces; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| stage | ms per face (mean) |",
        "|---|---|",
        *(f"| {s} | {1000 * per_face[s]:.1f} |" for s in STAGES),
        f"| **all face stages** | **{1000 * total:.1f}** |",
        "",
        f"Diffusion per face, reference-size backbone, T = {args.steps}, batch 1: "
        f"{diffusion:.1f} s (2T x {unet:.2f} s median UNet call + encode + decode). "
        f"Face stages are **{100 * total / diffusion:.3f}%** of it (target < 5%).",
        END,
    ]
    text = "\n".join(lines)
    publish(text, args.output, START, END, "Faces in photos: time around the diffusion model")


if __name__ == "__main__":
    main()
