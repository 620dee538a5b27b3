"""Inversion accuracy in latent space: plain DDIM vs fixed-point inversion, and the peer loop.

For each backbone, T in --steps and K (fixed-point iterations per inversion step) in --refine:
  - round trip: RMSE of sample(invert(z0)) against z0, everywhere;
  - recovery: RMSE inside the face mask of keyflip(keyflip(z0)) against z0 (anonymize, then
    deanonymize with the same key and nonce), both with the same inversion;
  - network calls of one keyflip (anonymize or deanonymize): 2T for DDIM, T * (K + 1) + 1 for
    fixed-point:K.
The peer rows run the plain diffusers loop (benchmarks/peer_loop.py) with the same model.

Backbones:
  - closed-form: the exact noise predictor of Gaussian latents N(0, 0.5^2); 4 random latents;
  - mixing: closed-form + 0.1 x the tiny random UNet, an almost exact predictor whose error
    mixes neighbouring latents as a real network's does; the same 4 latents;
  - tiny: the tiny random-weight LDM, on the example face (examples/astronaut_face.png) and
    three shifted / mirrored copies, encoded by its VQ encoder. Not a noise predictor at all.

    python benchmarks/inversion_accuracy.py --output docs/benchmarks.md

The whole run takes about an hour on 2 CPU cores (the tiny UNet is slow at batch 4). With
``--rows FILE`` each row is appended to FILE (JSON lines) as soon as it is measured, and the
table is made from every row in FILE (the last measurement of a setting wins), so the run can
be split (``--models tiny --steps 50``) or resumed; ``--steps`` and ``--refine`` empty with
``--rows`` only re-publish.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from docsection import publish
from peer_loop import (
    REFERENCE_SCHEDULER,
    backbone_unet,
    peer_invert,
    peer_keyflip_latent,
    peer_sample,
    schedulers,
)

START, END = "<!-- inversion-accuracy:start -->", "<!-- inversion-accuracy:end -->"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_face.png"


class Mixing:
    """The closed-form predictor plus a small non-local error from a random UNet."""

    def __init__(self, weight: float = 0.1) -> None:
        from faceanon.backbones.builtin import build_backbone
        from faceanon.backbones.closed_form import GaussianBackbone

        self.exact, self.unet, self.weight = GaussianBackbone(), build_backbone("tiny"), weight
        self.schedule, self.latent_shape = self.exact.schedule, self.exact.latent_shape

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        return self.exact.eps(latents, timestep) + self.weight * self.unet.eps(latents, timestep)


class Case:
    """A backbone, its latents, and a key's sign vectors and the face mask for them."""

    def __init__(self, name: str, batch: int = 4) -> None:
        from PIL import Image

        from faceanon.backbones.builtin import build_backbone
        from faceanon.backbones.closed_form import GaussianBackbone
        from faceanon.faces.masks import EllipseMask
        from faceanon.secure.keys import SecretKey, sign_vector

        self.model: Any
        if name in ("closed-form", "mixing"):
            self.model = GaussianBackbone() if name == "closed-form" else Mixing()
            g = torch.Generator().manual_seed(0)
            self.z0 = 0.5 * torch.randn(4, *self.model.latent_shape, generator=g)[:batch]
        else:
            self.model = build_backbone("tiny")
            face = np.asarray(Image.open(EXAMPLE).convert("RGB"))
            faces = np.stack([face, face[:, ::-1], np.roll(face, 20, 0), np.roll(face, -15, 1)])
            x = torch.from_numpy(faces[:batch].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
            self.z0 = self.model.encode(x)
        _, h, w = self.model.latent_shape
        key = SecretKey(bytes(range(16)))
        self.signs = torch.from_numpy(
            np.stack([sign_vector(key, (3, h, w), bytes([i]) * 16) for i in range(batch)])
        )
        self.mask = torch.from_numpy(EllipseMask().grid(h, w))[None, None].expand(batch, 1, h, w)

    @torch.inference_mode()
    def round_trip(self, steps: int, refine: int, peer: bool = False) -> float:
        """RMSE of sample(invert(z0)) against z0, everywhere."""
        from faceanon.diffusion.loops import invert, sample

        if peer:
            unet = backbone_unet(self.model)
            inverse, forward = schedulers(REFERENCE_SCHEDULER, steps)
            back = peer_sample(unet, peer_invert(unet, self.z0, inverse)[-1], forward)
        else:
            levels = self.model.schedule.levels(steps)
            inverted = invert(self.model.eps, self.z0, levels, refine=refine)[-1]
            back = sample(self.model.eps, inverted, levels)
        return float((back - self.z0).pow(2).mean().sqrt())

    @torch.inference_mode()
    def recovery(self, steps: int, refine: int, peer: bool = False) -> float:
        """RMSE inside the mask of anonymize + deanonymize with the same key and nonce."""
        from faceanon.methods.keyflip import keyflip_latent

        def keyflip(z: torch.Tensor) -> torch.Tensor:
            if peer:
                unet = backbone_unet(self.model)
                return peer_keyflip_latent(unet, z, self.signs, self.mask, steps)
            return keyflip_latent(self.model, z, self.signs, self.mask, steps, refine=refine)

        rec = keyflip(keyflip(self.z0))
        inside = self.mask.expand_as(self.z0)
        return float((rec - self.z0)[inside].pow(2).mean().sqrt())


def measure(
    name: str, steps: list[int], refine: list[int], record: Path | None = None
) -> list[dict[str, Any]]:
    from faceanon.diffusion.ddim_settings import network_calls

    case = Case(name)
    rows = []
    for t in steps:
        settings = [("faceanon", k, False) for k in refine] + [("peer (diffusers)", 0, True)]
        for loop, k, peer in settings:
            rows.append(
                {
                    "model": name,
                    "loop": loop,
                    "T": t,
                    "K": k,
                    "calls": network_calls(t, k),
                    "round_trip": case.round_trip(t, k, peer),
                    "recovery": case.recovery(t, k, peer),
                }
            )
            _report(rows[-1], record)
    return rows


def _report(row: dict[str, Any], record: Path | None) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)
    if record is not None:
        with record.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _merged(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """One row per setting (the last one measured), in table order."""
    latest = {(r["model"], r["loop"], r["T"], r["K"]): r for r in rows}
    order = {m: i for i, m in enumerate(models)}
    return sorted(
        latest.values(),
        key=lambda r: (order.get(r["model"], len(order)), r["T"], r["loop"] != "faceanon", r["K"]),
    )


def _table(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        START,
        f"`{command}` (CPU, float32). RMSE in latent units; the closed-form and mixing latents "
        "have sigma 0.5, the tiny model's encoded faces about 0.17. *Calls*: network calls of "
        "one anonymize or deanonymize: 2T (DDIM, K = 0), T x (K + 1) + 1 (fixed-point:K).",
        "",
        "| backbone | loop | T | K | calls | round trip | recovery (inside mask) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['loop']} | {r['T']} | {r['K']} | {r['calls']} | "
            f"{r['round_trip']:.2e} | {r['recovery']:.2e} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["closed-form", "mixing", "tiny"])
    parser.add_argument("--steps", type=int, nargs="*", default=[10, 20, 50])
    parser.add_argument("--refine", type=int, nargs="*", default=[0, 1, 2, 4])
    parser.add_argument("--rows", type=Path, help="JSON-lines file of measured rows (append)")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [r for name in args.models for r in measure(name, args.steps, args.refine, args.rows)]
    if args.rows is not None:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line]
    default_models = parser.get_default("models")
    command = "python benchmarks/inversion_accuracy.py"
    if args.rows is not None:
        command += f" --rows {args.rows}` (every run appends its rows to that file; `"
        command += "--models M --steps ... --refine ... --rows FILE` measures a part),"
        command += " published with `--steps --rows FILE"
    publish(
        _table(_merged(rows, default_models), command),
        args.output,
        START,
        END,
        "Inversion accuracy",
    )


if __name__ == "__main__":
    main()
