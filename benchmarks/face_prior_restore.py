"""face-prior: how exactly keyflip restores, by engine setting, noise floor and outside model.

    python benchmarks/face_prior_restore.py --cache /tmp/faces64-aligned.npz \
        --output docs/benchmarks.md

On held-out aligned crops (the first ``--faces`` of the 5% that `faceanon fit-prior` held out,
seed 0, taken from the cache of aligned crops written by benchmarks/face_prior_select.py: the
same crops in the same order), flip transform, default ellipse mask:
latent RMSE inside the mask of the anonymized face vs the original (how far it moves) and of
the restored face (anonymize, then deanonymize with the same key). Rows:
  - the shipped model at several (T, inversion) settings,
  - the shipped model without ``masked_eps`` (the outside predicted from the whole latent),
  - the shipped model with its residual floor raised from 0.01 (the fit's floor); lower
    floors need a refit (the file keeps only the floored variances).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from docsection import publish
from face_prior_probes import Probes

from faceanon.backbones.face_prior import FacePrior, FacePriorBackbone, default_model_file
from faceanon.training.fit_prior import split

START, END = "<!-- face-prior-restore:start -->", "<!-- face-prior-restore:end -->"


class Plain:
    """The same model without masked_eps: keyflip then predicts the outside from everything."""

    def __init__(self, backbone: FacePriorBackbone) -> None:
        self.schedule, self.eps = backbone.schedule, backbone.eps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="aligned crops (.npz)")
    parser.add_argument("--model", type=Path, default=default_model_file())
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    cache = np.load(args.cache)
    kept = cache["latents"][cache["padding"] <= 0.5]
    _, heldout = split(len(kept), 0.05, 0)
    probes = Probes.of(kept[heldout[: args.faces]])
    prior = FacePrior.load(args.model)
    shipped = FacePriorBackbone(prior)

    lines = [
        START,
        "`python benchmarks/face_prior_restore.py --cache CACHE --output docs/benchmarks.md`",
        "",
        f"{len(probes.x)} aligned crops, flip, ellipse mask; latent RMSE inside the mask"
        " (latents in [-1, 1]; one 8-bit level is 0.0078). Seconds: anonymize + deanonymize"
        " of all faces.",
        "",
        "| model | outside | T | inversion | anonymized vs original | restored vs original | s |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, object, int, int]] = [
        ("shipped", shipped, 15, 2),
        ("shipped", shipped, 50, 2),
        ("shipped", shipped, 50, 4),
        ("shipped", shipped, 100, 4),
        ("shipped", Plain(shipped), 50, 4),
    ]
    for floor in (0.02, 0.05):
        raised = replace(prior, noise=np.maximum(prior.noise, floor))
        rows.append((f"floor {floor}", FacePriorBackbone(raised), 50, 4))
    for label, model, steps, refine in rows:
        _, moved, restored, seconds = probes.round_trip(model, steps, refine)
        outside = "whole latent" if isinstance(model, Plain) else "outside alone"
        inversion = f"fixed-point:{refine}" if refine else "ddim"
        lines.append(
            f"| {label} | {outside} | {steps} | {inversion} | {moved:.4f} |"
            f" {restored:.4f} | {seconds:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", END]
    publish("\n".join(lines), args.output, START, END, "face-prior: how exactly it restores")


if __name__ == "__main__":
    main()
