"""How much one UNet call varies on this machine, alone and inside a DDIM-like loop.

Explains the spread of the "total / bare" column of bench_engine.py: calls alternate between an
isolated burst (same input) and a loop that feeds each output through a DDIM step and keeps
the trajectory, like the method does.

    python benchmarks/unet_call_jitter.py --batch 4 --calls 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from faceanon.backbones.registry import load_backbone
from faceanon.diffusion.ddim import ddim_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="reference-random")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    z = torch.randn(args.batch, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    backbone.eps(z, 500)  # warm-up

    def burst() -> list[float]:
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            backbone.eps(z, 500)
            times.append(time.perf_counter() - start)
        return times

    def loop() -> list[float]:
        times, current, trajectory = [], z, [z]
        for i in range(args.calls):
            start = time.perf_counter()
            eps = backbone.eps(current, 20 * i)
            times.append(time.perf_counter() - start)
            current = ddim_step(current, eps, 0.9, 0.8)
            trajectory.append(current)
        return times

    for name, fn in (("burst", burst), ("loop", loop), ("burst", burst), ("loop", loop)):
        times = fn()
        print(
            f"{name:5s} median {statistics.median(times):.2f} s, "
            f"min {min(times):.2f}, max {max(times):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
