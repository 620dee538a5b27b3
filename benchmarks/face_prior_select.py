"""Choose d (PCA components) and K (mixture components) of the face-prior model by measurement.

    python benchmarks/face_prior_select.py ../shared/data/faces64 --cache /tmp/faces64-aligned.npz \
        --grid 128:8 128:16 192:16 256:8 256:16 256:32 --output docs/benchmarks.md

The crops are aligned once (``faceanon.training.fit_prior.align_dataset``, cached as float16 in
``--cache``, outside the repository); each (d, K) is fitted on the same training split and
measured on the same held-out crops:
  - held-out log-likelihood (nats per dimension; higher is better),
  - shipped file size (MiB),
  - keyflip on 16 held-out faces (face-prior's default engine, T = 50, fixed-point:4, flip,
    default ellipse mask): latent
    RMSE inside the mask of the anonymized face vs the original (how far it moves) and of the
    restored face (how exactly it comes back), and the share of anonymized faces whose
    posterior mixture component (at the clean end) differs from the original's,
  - time of one eps call for a batch of 1 against a 12288 x 256 float64 matmul yardstick
    timed in the same run (a ratio; this machine's speed varies).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from docsection import publish
from face_prior_probes import Probes

from faceanon.backbones.face_prior import DIM, FacePriorBackbone
from faceanon.training.fit_prior import AlignedSet, align_dataset, build_prior, split

START, END = "<!-- face-prior-select:start -->", "<!-- face-prior-select:end -->"


def aligned_set(data: Path, cache: Path | None, workers: int, max_padding: float) -> AlignedSet:
    """The aligned crops (padding at most ``max_padding``), from ``cache`` if it exists; the
    cache keeps every crop with a face (float16) with its padded fraction."""
    if cache is not None and cache.exists():
        f = np.load(cache)
        names, latents, padding = f["names"], f["latents"].astype(np.float32), f["padding"]
        missed = list(f["missed"])
    else:
        full = align_dataset(data, max_padding=1.0, workers=workers)  # keeps every face
        names, latents, padding, missed = (
            np.array(full.names),
            full.latents,
            full.padding,
            full.missed,
        )
        if cache is not None:
            np.savez(
                cache,
                latents=latents.astype(np.float16),
                names=names,
                padding=padding,  # one per latent, same order
                missed=np.array(missed),
            )
    keep = padding <= max_padding
    return AlignedSet(list(names[keep]), latents[keep], padding, missed)


def timed(fn: object, repeats: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--grid", nargs="+", default=["128:8", "256:16"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-padding", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    aligned = aligned_set(args.data, args.cache, args.workers, args.max_padding)
    _, test = split(len(aligned.latents), 0.05, 0)
    probes = Probes.of(aligned.latents[test[: args.faces]])
    u = torch.randn(DIM, 256, dtype=torch.float64)  # the yardstick: one projection
    row = torch.randn(1, DIM, dtype=torch.float64)
    yardstick = timed(lambda: row @ u)
    lines = [
        START,
        "`python benchmarks/face_prior_select.py ../shared/data/faces64 --cache CACHE --grid "
        + " ".join(args.grid)
        + "`",
        "",
        f"{len(aligned.latents)} aligned crops kept (padding <= {args.max_padding}), 95% fit,"
        f" 5% held out; recovery on {len(probes.x)} held-out faces, T = 50, fixed-point:4.",
        "",
        "| d | K | held-out nats/dim | file MiB | anonymized RMSE | restored RMSE |"
        " component changed | eps call / yardstick | fit s (PCA once, largest d first) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    grid = [tuple(int(v) for v in spec.split(":")) for spec in args.grid]
    pca = None
    for d, k in grid:
        start = time.perf_counter()
        prior, report = build_prior(aligned, d, k, seed=0, iters=args.iterations, pca=pca)
        if pca is None or prior.components > pca.components:
            pca = prior  # the largest d first: later rows reuse its PCA
        fit_s = time.perf_counter() - start
        size = len(prior.to_bytes()) / 2**20
        backbone = FacePriorBackbone(prior)
        anon, moved, restored, _ = probes.round_trip(backbone, 50, 4)
        before = backbone.posterior_weights(probes.x, 0).argmax(dim=1)
        after = backbone.posterior_weights(anon, 0).argmax(dim=1)
        changed = float((before != after).double().mean())
        call = timed(lambda b=backbone: b.eps(probes.x[:1], 500))
        lines.append(
            f"| {d} | {k} | {report.heldout_nats_per_dim:.4f} | {size:.2f} |"
            f" {moved:.4f} | {restored:.2e} | {changed:.0%} |"
            f" {call / yardstick:.1f} | {fit_s:.0f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", END]
    publish("\n".join(lines), args.output, START, END, "face-prior: choosing d and K")


if __name__ == "__main__":
    main()
