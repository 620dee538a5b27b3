"""hydro's strength trade-off from a ``faceanon evaluate --attack reconstruct`` report.

For each attacked method of the report (hydro at each strength, and whatever else was run
beside it as a reference): privacy (TAR at FAR 1% published and after the attacker's
reconstruction, per recognizer) against the realism proxies of the same run (the detector still
finds a face, landmark shift = pose and expression kept, SSIM of the face, PSNR outside).
Writes a Markdown table (into ``--doc`` between its markers) and a plot of hydro's curve.

    python benchmarks/hydro_tradeoff.py reports/celeba-wild-hydro-curve \
        --doc docs/evaluation.md --plot docs/images/hydro-tradeoff.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from docsection import publish

START, END = "<!-- hydro-tradeoff:start -->", "<!-- hydro-tradeoff:end -->"
FAR = "tar@0.01"
QUALITY = ("face_found", "landmark_shift", "ssim_face", "psnr_outside")


def rows(results: dict) -> list[dict]:
    """One row per attacked method: its TARs before/after the attack and its quality means."""
    out = []
    recognizers = results["verification"]["recognizers"]
    for method, a in results["reconstruction_attack"].items():
        q = results["quality"][a["published"]]
        kind, _, value = method.partition(" ")
        out.append(
            {
                "method": method,
                "strength": float(value) if kind == "hydro" else None,
                "published": {
                    r: v["conditions"][a["published"]][FAR] for r, v in recognizers.items()
                },
                "reconstructed": {
                    r: v["conditions"][a["reconstructed"]][FAR] for r, v in recognizers.items()
                },
                "pairs": recognizers[next(iter(recognizers))]["conditions"][a["published"]][
                    "genuine_pairs"
                ],
                "training_pairs": a["training_pairs"],
                "steps": a["steps"],
                "l1": (a["held_out_l1_published"], a["held_out_l1_reconstructed"]),
                **{k: q.get(k, {}).get("mean", math.nan) for k in QUALITY},
            }
        )
    return sorted(out, key=lambda r: (r["strength"] is None, r["strength"] or 0.0))


def _num(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table(found: list[dict], recognizers: list[str]) -> list[str]:
    head = ["method", *(f"{r} TAR@1% published -> reconstructed" for r in recognizers)]
    head += [
        "face found %",
        "landmark shift %",
        "SSIM face",
        "PSNR outside",
        "attacker: pairs / steps / held-out L1",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        cells = [r["method"]]
        cells += [
            f"{100 * r['published'][n]:.0f} -> {100 * r['reconstructed'][n]:.0f}"
            for n in recognizers
        ]
        cells += [
            _num(100 * r["face_found"], 0),
            _num(100 * r["landmark_shift"], 1),
            f"{r['ssim_face']:.3f}",
            f"{r['psnr_outside']:.1f}",
            f"{r['training_pairs']} / {r['steps']} / {r['l1'][0]:.3f} -> {r['l1'][1]:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(found: list[dict], recognizers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hydro = [r for r in found if r["strength"] is not None]
    x = [r["strength"] for r in hydro]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for n, colour in zip(recognizers, ("C0", "C1", "C2", "C3"), strict=False):
        left.plot(
            x, [100 * r["published"][n] for r in hydro], "--o", color=colour, label=f"{n} published"
        )
        left.plot(
            x,
            [100 * r["reconstructed"][n] for r in hydro],
            "-s",
            color=colour,
            label=f"{n} reconstructed",
        )
    left.set(
        xlabel="hydro strength (t* / T)",
        ylabel="TAR % at FAR 1%",
        title="privacy (lower: more private)",
    )
    left.set_ylim(-2, 100)
    left.legend(fontsize=7)
    right.plot(x, [100 * r["face_found"] for r in hydro], "-o", label="face found %")
    right.plot(
        x, [100 * r["landmark_shift"] for r in hydro], "-s", label="landmark shift % (eye span)"
    )
    right.plot(x, [100 * r["ssim_face"] for r in hydro], "-^", label="SSIM face x 100")
    right.set(xlabel="hydro strength (t* / T)", title="realism proxies")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a faceanon evaluate --attack reconstruct report")
    parser.add_argument("--doc", type=Path, help="Markdown file to write the table into")
    parser.add_argument("--plot", type=Path, help="PNG of hydro's curve")
    args = parser.parse_args()
    data = json.loads((args.report / "results.json").read_text())
    results, config = data["results"], data["config"]
    recognizers = list(results["verification"]["recognizers"])
    found = rows(results)
    if not found:
        raise SystemExit(f"{args.report}: no reconstruction attack in this report")
    pairs = found[0]["pairs"]
    section = [
        START,
        f"From `{args.report}` ({config['images']}, --limit {config['limit']}, "
        f"seed {config['seed']}, "
        f"{config['backbone']['name']} backbone, {config['seconds'] / 60:.0f} minutes): "
        f"`python benchmarks/hydro_tradeoff.py {args.report}`. TAR over **{pairs}** genuine pairs "
        f"(one pair = {100 / pairs:.1f} points); the attacker of each row trained on "
        f"{config['attack']['faces']} faces of {config['attack']['images']} for "
        f"{config['attack']['minutes']} minutes.",
        "",
        *table(found, recognizers),
        END,
    ]
    publish("\n".join(section), args.doc, START, END)
    if args.plot:
        plot(found, recognizers, args.plot)


if __name__ == "__main__":
    main()
