"""face-prior: speed of one 256-px face on this CPU, and the decoder's upsampling measured.

    python benchmarks/bench_face_prior.py --faces ../shared/data/celebahq-samples \
        --output docs/benchmarks.md

Speed: ``Anonymizer.anonymize`` of the example aligned face (examples/astronaut_face.png,
batch 1, default ellipse mask), median of 5, at the paper's T = 50 (DDIM), T = 50 with
fixed-point:2 and :4 (face-prior's default) and T = 15, fixed-point:2; beside it one call of
the reference-size random UNet (274 M, the ldm-celebahq-256 architecture) timed in the same
run as the yardstick (one face with the real model costs 46-100 such calls).

Decoder: each 512-px face of ``--faces`` is area-resized to 256 px (the pipeline's crop), encoded
(4x area mean) and decoded by each upsampling; PSNR against the 256-px crop, and whether the
decode is consistent (its 4x area mean equals the latent: max abs difference).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from docsection import publish
from PIL import Image

from faceanon.anonymizer import Anonymizer
from faceanon.backbones.builtin import build_components
from faceanon.backbones.face_prior import load_face_prior, upsample
from faceanon.secure.keys import SecretKey

ROOT = Path(__file__).resolve().parents[1]
SPEED = "<!-- face-prior-speed:start -->", "<!-- face-prior-speed:end -->"
DECODER = "<!-- face-prior-decoder:start -->", "<!-- face-prior-decoder:end -->"


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed() -> str:
    face = np.asarray(Image.open(ROOT / "examples" / "astronaut_face.png").convert("RGB"))
    backbone = load_face_prior()
    key = SecretKey(bytes(range(16)))
    unet, _ = build_components("reference")
    unet = unet.eval().to(memory_format=torch.channels_last)
    z = torch.randn(1, 3, 64, 64).to(memory_format=torch.channels_last)

    def unet_call() -> None:
        with torch.inference_mode():
            unet(z, 500)

    unet_call()  # warm-up
    yardstick = median_time(unet_call, 3)
    lines = [
        SPEED[0],
        "`python benchmarks/bench_face_prior.py --output docs/benchmarks.md`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Yardstick: one call of"
        f" the reference-size UNet, {yardstick:.2f} s in this run.",
        "",
        "| setting | network calls | face-prior s (median of 5) | / one reference UNet call |",
        "|---|---|---|---|",
    ]
    for label, steps, inversion, calls in (
        ("T = 50, ddim (paper)", 50, "ddim", 100),
        ("T = 50, fixed-point:2", 50, "fixed-point:2", 151),
        ("T = 50, fixed-point:4 (face-prior default)", 50, "fixed-point:4", 251),
        ("T = 15, fixed-point:2 (the networks' default)", 15, "fixed-point:2", 46),
    ):
        anonymizer = Anonymizer(backbone, steps, inversion=inversion)
        anonymizer.anonymize(face, key)  # warm-up
        seconds = median_time(lambda a=anonymizer: a.anonymize(face, key), 5)
        lines.append(f"| {label} | {calls} | {seconds:.2f} | {seconds / yardstick:.2f} |")
    return "\n".join([*lines, "", SPEED[1]])


def decoder(faces: Path) -> str:
    files = sorted(p for p in faces.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    crops = [np.asarray(Image.open(p).convert("RGB").resize((256, 256), Image.BOX)) for p in files]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    z = F.avg_pool2d(x, 4)
    lines = [
        DECODER[0],
        "`python benchmarks/bench_face_prior.py --faces ../shared/data/celebahq-samples"
        " --output docs/benchmarks.md`",
        "",
        f"{len(crops)} CelebA-HQ faces at 256 px; PSNR of decode(encode(x)) against x (pixel"
        " range [-1, 1] -> 8-bit); consistency: max |encode(decode(z)) - z|.",
        "",
        "| upsampling | PSNR dB (mean) | consistency |",
        "|---|---|---|",
    ]
    for mode in ("nearest", "bilinear", "bicubic", "bicubic-consistent"):
        up = upsample(z, mode).clamp(-1, 1)
        mse = ((up - x) ** 2).mean(dim=(1, 2, 3)) / 4.0  # in [0, 1] units
        psnr = float((10 * torch.log10(1.0 / mse)).mean())
        gap = float((F.avg_pool2d(upsample(z, mode), 4) - z).abs().max())
        lines.append(f"| {mode} | {psnr:.2f} | {gap:.1e} |")
    return "\n".join([*lines, "", DECODER[1]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, help="folder of aligned faces (decoder table)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.faces is not None:
        publish(decoder(args.faces), args.output, *DECODER, "face-prior decoder")
    publish(speed(), args.output, *SPEED, "face-prior speed")


if __name__ == "__main__":
    main()
