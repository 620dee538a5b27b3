"""Recovery error of the engine with the closed-form backbone (exact eps for Gaussian latents).

For T in 10, 20, 50, 100: RMSE (latent units; the data have sigma = 0.5) of
  - the plain DDIM round trip  sample(invert(z0)),
  - anonymize -> deanonymize with the right key, inside the face mask,
  - the same with a key one bit off, and with a random key,
  - the anonymized latent vs the original, inside the mask,
and whether the latent outside the mask equals the original exactly.

    python benchmarks/closed_form_recovery.py --output docs/benchmarks.md

Plain DDIM inversion (``--inversion ddim``, the paper's) unless ``--inversion`` says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from docsection import publish

from faceanon.backbones.closed_form import GaussianBackbone
from faceanon.diffusion.ddim_settings import parse_inversion
from faceanon.diffusion.loops import invert, sample
from faceanon.faces.masks import EllipseMask
from faceanon.methods.keyflip import keyflip_latent
from faceanon.secure.keys import SecretKey, sign_vector

START, END = "<!-- closed-form-recovery:start -->", "<!-- closed-form-recovery:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inversion", default="ddim")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()
    refine = parse_inversion(args.inversion)
    backbone = GaussianBackbone()
    batch = 8
    g = torch.Generator().manual_seed(0)
    z0 = backbone.mu + backbone.sigma * torch.randn(batch, *backbone.latent_shape, generator=g)
    nonces = [bytes([i]) * 16 for i in range(batch)]
    mask = torch.from_numpy(EllipseMask().grid(64, 64))[None, None].expand(batch, 1, 64, 64)
    inside = mask.expand_as(z0)
    key = SecretKey(bytes(range(16)))

    def signs(k: SecretKey) -> torch.Tensor:
        return torch.from_numpy(
            np.stack([sign_vector(k, backbone.latent_shape, n) for n in nonces])
        )

    def rms(x: torch.Tensor) -> float:
        return float(x.pow(2).mean().sqrt())

    lines = [
        START,
        f"`python benchmarks/closed_form_recovery.py --inversion {args.inversion}`",
        "",
        "| T | round trip | right key | 1 bit off | random key | anonymized | outside exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for steps in (10, 20, 50, 100):
        levels = backbone.schedule.levels(steps)
        inverted = invert(backbone.eps, z0, levels, refine=refine)[-1]
        roundtrip = rms(sample(backbone.eps, inverted, levels) - z0)
        anon = keyflip_latent(backbone, z0, signs(key), mask, steps, refine=refine)
        results = [
            keyflip_latent(backbone, anon, signs(k), mask, steps, refine=refine)
            for k in (key, key.with_bit_flipped(5), SecretKey.generate())
        ]
        exact = all(torch.equal(r[~inside], z0[~inside]) for r in [anon, *results])
        cells = [rms((r - z0)[inside]) for r in results] + [rms((anon - z0)[inside])]
        lines.append(
            f"| {steps} | {roundtrip:.4f} | "
            + " | ".join(f"{c:.4f}" for c in cells)
            + f" | {'yes' if exact else 'NO'} |"
        )
    publish("\n".join([*lines, END]), args.output, START, END)


if __name__ == "__main__":
    main()
