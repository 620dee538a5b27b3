"""faceanon's engine against the yardstick: the plain diffusers keyflip loop (peer_loop.py).

One anonymization of one aligned face (batch 1) by each, on the reference-size network (random
weights: speed does not depend on them), alternating in the same process so that both see the
same machine: pair i runs the peer first when i is even, faceanon first when it is odd. The
ratio of each pair is peer seconds / faceanon seconds; the table gives every pair and the
median. Recovery at the same settings (closed-form and mixing backbones, as in
inversion_accuracy.py) is measured in the same run, so the speed-up is read beside what it
costs or gains in accuracy.

    python benchmarks/bench_peer.py --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from docsection import publish
from peer_loop import peer_keyflip_images

START, END = "<!-- peer-benchmark:start -->", "<!-- peer-benchmark:end -->"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_face.png"


def _recovery(steps: int, refine: int, peer: bool) -> dict[str, float]:
    """RMSE inside the mask after anonymize + deanonymize (same key), as in §2's table."""
    from inversion_accuracy import Case

    return {
        name: Case(name, batch=2).recovery(steps, refine, peer)
        for name in ("closed-form", "mixing")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating timed pairs")
    parser.add_argument("--peer-steps", type=int, default=50, help="the paper's T")
    parser.add_argument("--steps", type=int, help="faceanon's T (default: faceanon's default)")
    parser.add_argument("--inversion", help="faceanon's inversion (default: faceanon's default)")
    parser.add_argument("--size", default="reference", choices=("reference", "tiny"))
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    from PIL import Image

    from faceanon.anonymizer import Anonymizer, to_tensor
    from faceanon.backbones.builtin import build_components
    from faceanon.backbones.closed_form import reference_schedule
    from faceanon.backbones.diffusers_backbone import DiffusersBackbone
    from faceanon.diffusion.ddim_settings import (
        DEFAULT_INVERSION,
        DEFAULT_STEPS,
        network_calls,
        parse_inversion,
    )
    from faceanon.faces.masks import EllipseMask
    from faceanon.secure.keys import SecretKey, sign_vector

    steps = args.steps or DEFAULT_STEPS
    inversion = args.inversion or DEFAULT_INVERSION
    refine = parse_inversion(inversion)
    torch.set_grad_enabled(False)
    peer_unet, peer_vq = (m.eval() for m in build_components(args.size))
    ours = Anonymizer(
        DiffusersBackbone(*build_components(args.size), reference_schedule(), name=args.size),
        steps,
        inversion=inversion,
    )
    face = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    key = SecretKey(bytes(range(16)))
    nonce = bytes(16)
    signs = torch.from_numpy(sign_vector(key, (3, 64, 64), nonce)[None])
    mask = EllipseMask()
    grid = torch.from_numpy(mask.grid(64, 64))[None, None]

    def run_peer() -> Any:
        return peer_keyflip_images(
            peer_unet, peer_vq, to_tensor([face], 256), signs, grid, args.peer_steps
        )

    def run_ours() -> Any:
        return ours.apply([face], key, [mask], [nonce])

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    z = torch.zeros(1, 3, 64, 64)
    t = torch.tensor(500)
    for _ in range(2):  # warm-up of both
        peer_unet(z, t)
        ours.backbone.eps(z, 500)
    call_peer = statistics.median(timed(lambda: peer_unet(z, t)) for _ in range(5))
    call_ours = statistics.median(timed(lambda: ours.backbone.eps(z, 500)) for _ in range(5))

    pairs = []
    for i in range(args.pairs):
        if i % 2 == 0:
            p, o = timed(run_peer), timed(run_ours)
        else:
            o, p = timed(run_ours), timed(run_peer)
        pairs.append((p, o))
        print(
            f"pair {i + 1}: peer {p:.1f} s, faceanon {o:.1f} s, ratio {p / o:.2f}", file=sys.stderr
        )
    ratios = [p / o for p, o in pairs]
    rec_peer = _recovery(args.peer_steps, 0, peer=True)
    rec_ours = _recovery(steps, refine, peer=False)

    command = " ".join(["python benchmarks/bench_peer.py", *sys.argv[1:]])
    calls_peer, calls_ours = 2 * args.peer_steps, network_calls(steps, refine)
    lines = [
        START,
        f"`{command}`: one anonymization of one aligned 256x256 face (batch 1), "
        f"{args.size}-size network (random weights), float32, CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}). Recovery: RMSE "
        "inside the mask after anonymize + deanonymize with the right key (latent units, data "
        "sigma 0.5), measured in the same run as in the inversion-accuracy table.",
        "",
        "| loop | T | inversion | network calls | UNet call (s, median of 5) | "
        "recovery closed-form | recovery mixing |",
        "|---|---|---|---|---|---|---|",
        f"| peer: diffusers schedulers, plain UNet | {args.peer_steps} | ddim | {calls_peer} | "
        f"{call_peer:.3f} | {rec_peer['closed-form']:.2e} | {rec_peer['mixing']:.2e} |",
        f"| faceanon | {steps} | {inversion} | {calls_ours} | {call_ours:.3f} | "
        f"{rec_ours['closed-form']:.2e} | {rec_ours['mixing']:.2e} |",
        "",
        "| pair | peer s | faceanon s | peer / faceanon |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {p:.1f} | {o:.1f} | {p / o:.2f} |" for i, (p, o) in enumerate(pairs)]
    lines += [
        "",
        f"**Median ratio {statistics.median(ratios):.2f}** (faceanon is that many times faster); "
        f"UNet call ratio {call_peer / call_ours:.2f} (channels_last), network calls "
        f"{calls_peer} vs {calls_ours}.",
        END,
    ]
    publish("\n".join(lines), args.output, START, END, "Speed against the plain diffusers loop")


if __name__ == "__main__":
    main()
