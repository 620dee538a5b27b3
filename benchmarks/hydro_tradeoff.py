"""hydro's strength trade-off, from ``faceanon evaluate`` reports.

Each row is a method of one report: every hydro strength, and the methods the reconstruction
attack was run on (``--attack reconstruct``), as references. Privacy: TAR at FAR 1% with each
recognizer for the published face, and after the attacker's reconstruction where the report
has it; realism proxies of the same run: the detector still finds a face, landmark shift (pose
and expression kept), SSIM of the face, PSNR outside it. Writes a Markdown table (into
``--doc`` between its markers) and a plot of hydro's curve.

    python benchmarks/hydro_tradeoff.py reports/celeba-wild-hydro-curve \
        reports/celeba-wild-hydro-attack --doc docs/evaluation.md \
        --plot docs/images/hydro-tradeoff.png
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


def rows(results: dict, report: str) -> list[dict]:
    """One row per hydro condition and per attacked method: TARs (published, and
    reconstructed when attacked) and the quality means."""
    attacks = results.get("reconstruction_attack", {})
    labels = [c for c in results["quality"] if c.startswith("hydro ") and "->" not in c]
    labels += [m for m in attacks if m not in labels]
    recognizers = results["verification"]["recognizers"]

    def tars(condition: str) -> dict[str, float]:
        return {r: v["conditions"][condition][FAR] for r, v in recognizers.items()}

    out = []
    for label in labels:
        a = attacks.get(label)
        published = a["published"] if a else label
        q = results["quality"][published]
        kind, _, value = label.partition(" ")
        first = next(iter(recognizers.values()))
        out.append(
            {
                "method": label,
                "report": report,
                "strength": float(value) if kind == "hydro" else None,
                "published": tars(published),
                "reconstructed": tars(a["reconstructed"]) if a else None,
                "pairs": first["conditions"][published]["genuine_pairs"],
                "attacker": a,
                **{k: q.get(k, {}).get("mean", math.nan) for k in QUALITY},
            }
        )
    return out


def _num(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table(found: list[dict], recognizers: list[str]) -> list[str]:
    head = ["method", "report", *(f"{r} TAR@1%" for r in recognizers)]
    head += ["face found %", "landmark shift %", "SSIM face", "PSNR outside"]
    head += ["attacker: pairs / steps / held-out L1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        cells = [r["method"], r["report"]]
        for n in recognizers:
            cell = f"{100 * r['published'][n]:.0f}"
            if r["reconstructed"] is not None:
                cell += f" -> {100 * r['reconstructed'][n]:.0f}"
            cells.append(cell)
        cells += [
            _num(100 * r["face_found"], 0),
            _num(100 * r["landmark_shift"], 1),
            _num(r["ssim_face"], 3),
            _num(r["psnr_outside"], 1),
        ]
        a = r["attacker"]
        cells.append(
            f"{a['training_pairs']} / {a['steps']} / {a['held_out_l1_published']:.3f} -> "
            f"{a['held_out_l1_reconstructed']:.3f}"
            if a
            else "-"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(found: list[dict], recognizers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hydro = sorted((r for r in found if r["strength"] is not None), key=lambda r: r["strength"])
    x = [r["strength"] for r in hydro]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for n, colour in zip(recognizers, ("C0", "C1", "C2", "C3"), strict=False):
        left.plot(x, [100 * r["published"][n] for r in hydro], "-o", color=colour, label=n)
        attacked = [r for r in hydro if r["reconstructed"] is not None]
        if not attacked:
            continue
        left.plot(
            [r["strength"] for r in attacked],
            [100 * r["reconstructed"][n] for r in attacked],
            "s",
            mfc="none",
            ms=9,
            color=colour,
            label=f"{n} after the attack",
        )
    left.set(xlabel="hydro strength (t* / T)", ylabel="TAR % at FAR 1%")
    left.set_title("privacy (lower: more private)")
    left.set_ylim(-2, 60)
    left.legend(fontsize=7)
    right.plot(x, [100 * r["face_found"] for r in hydro], "-o", label="face found %")
    right.plot(x, [100 * r["landmark_shift"] for r in hydro], "-s", label="landmark shift %")
    right.plot(x, [100 * r["ssim_face"] for r in hydro], "-^", label="SSIM face x 100")
    right.set(xlabel="hydro strength (t* / T)", title="realism proxies")
    right.set_ylim(0, 105)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def describe(report: Path, config: dict, pairs: int) -> str:
    text = (
        f"`{report}`: {config['images']}, --limit {config['limit']}, seed {config['seed']}, "
        f"backbone {(config['backbone'] or {}).get('name', 'none')}, "
        f"{config['seconds'] / 60:.0f} minutes, "
        f"**{pairs}** genuine pairs (one pair = {100 / pairs:.1f} points)"
    )
    attack = config.get("attack")
    if attack:
        text += (
            f"; the attacker of each row trained on {attack['faces']} faces of "
            f"{attack['images']} for {attack['minutes']} minutes"
        )
    return text + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="faceanon evaluate report folders")
    parser.add_argument("--doc", type=Path, help="Markdown file to write the table into")
    parser.add_argument("--plot", type=Path, help="PNG of hydro's curve")
    args = parser.parse_args()
    found: list[dict] = []
    lines = [START, f"`python benchmarks/hydro_tradeoff.py {' '.join(map(str, args.reports))}`", ""]
    recognizers: list[str] = []
    for report in args.reports:
        data = json.loads((report / "results.json").read_text())
        mine = rows(data["results"], report.name)
        if not mine:
            raise SystemExit(f"{report}: no hydro condition and no reconstruction attack")
        recognizers = recognizers or list(data["results"]["verification"]["recognizers"])
        lines.append(f"- {describe(report, data['config'], mine[0]['pairs'])}")
        found += mine
    lines += ["", *table(found, recognizers), END]
    publish("\n".join(lines), args.doc, START, END)
    if args.plot:
        plot(found, recognizers, args.plot)


if __name__ == "__main__":
    main()
