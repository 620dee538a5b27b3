"""The evaluation report: ``results.json`` (every number and the exact configuration),
``report.md`` (the tables), ROC and TAR plots, and image grids of a few probes.

Grids made from dataset images are written next to the report only: never commit them.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceanon.eval.protocols import CONDITION_ORDER, FARS, ProbeResult
from faceanon.media.io import write_atomic


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _num(value: float, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _tar(row: dict[str, Any], far: float) -> str:
    """TAR % with its bootstrap interval when there is one."""
    ci = row.get(f"tar@{far:g}_ci")
    value = _pct(row[f"tar@{far:g}"])
    return f"{value} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else value


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def markdown(results: dict[str, Any], config: dict[str, Any]) -> str:
    lines = [f"# faceanon evaluation: {config['protocol']}", ""]
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    lines += [
        f"Images: {results['images']} ({results['images_without_face']} where the recognizers' "
        f"locator found no face: left out). Probes (images processed): {results['probes']}, "
        f"{results['faces_in_probes']} faces found by the anonymization pipeline; "
        f"{results['probes_without_face']} probes had no face found and were kept unchanged.",
        "",
    ]
    verification = results.get("verification")
    recognizers = list(next(iter(results["similarity"].values()), {}).keys())
    if verification:
        recognizers = list(verification["recognizers"])
        lines += [
            "## Verification",
            "",
            f"{verification['usable_pairs']} of {verification['pairs']} pairs usable "
            f"({verification['genuine_pairs']} genuine, {verification['impostor_pairs']} "
            f"impostor). Every TAR row below uses the same "
            f"{verification.get('genuine_pairs_evaluated', '?')} genuine pairs (those whose "
            "probe was processed), the clean row included. Thresholds from the clean impostor "
            f"scores of {verification.get('impostors_from', 'the pairs file')}; TAR (%) with "
            "the second image of each genuine pair replaced by the condition (lower is more "
            "private for anonymization, higher is better for de-anonymization), with a 95% "
            f"bootstrap interval over those pairs ({verification.get('bootstrap', '?')} "
            "resamples, threshold fixed). Clean accuracy: 10-fold on the file's pairs, "
            "threshold chosen on the other 9 folds.",
            "",
        ]
        rows = []
        for name, r in verification["recognizers"].items():
            clean = r["conditions"]["clean"]
            rows.append(
                [
                    name,
                    f"{_pct(r['clean_accuracy'])} ± {_pct(r['clean_accuracy_std'])}",
                    str(r.get("impostors", "?")),
                    *(
                        f"{_num(r['thresholds'][f'{far:g}'])} / "
                        f"{r.get('false_accepts_allowed', {}).get(f'{far:g}', '?')} / "
                        f"{_pct(clean[f'tar@{far:g}'])}"
                        for far in FARS
                    ),
                ]
            )
        header = ["recognizer", "clean accuracy %", "impostors"]
        header += [f"threshold / impostors above it / TAR % at FAR {100 * far:g}%" for far in FARS]
        lines += _table(header, rows)
        conditions = list(next(iter(verification["recognizers"].values()))["conditions"])
        header = ["condition"] + [f"{n} TAR@{100 * far:g}%" for n in recognizers for far in FARS]
        rows = []
        for cond in conditions:
            row = [cond]
            for n in recognizers:
                c = verification["recognizers"][n]["conditions"][cond]
                row += [_tar(c, far) for far in FARS]
            rows.append(row)
        lines += _table(header, rows)
    if verification and results.get("reconstruction_attack"):
        lines += _attack_lines(results["reconstruction_attack"], verification)
    lines += [
        "## Similarity",
        "",
        "Cosine similarity between the original and the condition, mean ± std (n).",
        "",
    ]
    rows = []
    for cond, per in results["similarity"].items():
        cells = [f"{_num(v['mean'])} ± {_num(v['std'])} ({v['n']})" for v in per.values()]
        rows.append([cond, *cells])
    lines += _table(["condition", *recognizers], rows)
    lines += [
        "## Image quality",
        "",
        "Original vs condition, mean over probes with a face. Face: inside the mask polygons; "
        "outside: every other pixel (the feather band included); changed: fraction of those "
        "outside pixels that differ at all; face found: share of the faces that the detector"
        " (YuNet, as in the pipeline) still finds in the output (box IoU >= 0.3); landmark"
        " shift (pose and expression kept?): the 68 dlib landmarks found in the output's aligned"
        " crop vs the original's, at the original's box, mean distance in % of the outer eye"
        " corners' distance (0 when unchanged).",
        "",
    ]
    header = ["condition", "PSNR face", "SSIM face", "MSE face", "PSNR image", "SSIM image"]
    header += ["PSNR outside", "changed outside %", "face found %", "landmark shift %"]
    rows = []
    for cond, q in results["quality"].items():
        rows.append(
            [
                cond,
                _num(q["psnr_face"]["mean"], 2),
                _num(q["ssim_face"]["mean"]),
                _num(q["mse_face"]["mean"], 1),
                _num(q["psnr_image"]["mean"], 2),
                _num(q["ssim_image"]["mean"]),
                _num(q["psnr_outside"]["mean"], 2),
                _pct(q["changed_outside"]["mean"]),
                _pct(q["face_found"]["mean"]) if "face_found" in q else "-",
                _pct(q["landmark_shift"]["mean"]) if "landmark_shift" in q else "-",
            ]
        )
    lines += _table(header, rows)
    attack = results.get("attack")
    if attack:
        lines += [
            "## Key reuse attack",
            "",
            f"Known pair: {attack['known_image']}. Fraction of the true sign vector inside each "
            "other face's mask that the attacker's estimate gets right (0.5 = chance):",
            "",
        ]
        rows = [
            [mode, f"{_num(s['mean'])} ± {_num(s['std'])} ({s['n']})"]
            for mode, s in attack["sign_agreement"].items()
        ]
        lines += _table(["mode", "sign agreement"], rows)
    return "\n".join(lines)


def _attack_lines(attack: dict[str, Any], verification: dict[str, Any]) -> list[str]:
    """The reconstruction attack: published vs reconstructed TAR per method, the gain, and how
    the attacker's network was trained."""
    lines = [
        "## Reconstruction attack",
        "",
        "An attacker who can run each method on faces of their own trains a network on "
        "(method output, original) aligned crops and applies it to the published faces. TAR % "
        "published -> reconstructed (gain in points), thresholds as above. Held-out L1: mean "
        "absolute error (pixels in [-1, 1]) of the attacker's held-out crops before -> after "
        "the network.",
        "",
    ]
    names = list(verification["recognizers"])
    header = ["method", *(f"{n} TAR@{100 * far:g}%" for n in names for far in FARS)]
    header += ["training pairs", "steps", "held-out L1"]
    rows = []
    for label, a in attack.items():
        row = [label]
        for n in names:
            conditions = verification["recognizers"][n]["conditions"]
            before, after = conditions[a["published"]], conditions[a["reconstructed"]]
            for far in FARS:
                b, r = before[f"tar@{far:g}"], after[f"tar@{far:g}"]
                row.append(f"{_pct(b)} -> {_pct(r)} ({100 * (r - b):+.1f})")
        row += [
            str(a["training_pairs"]),
            str(a["steps"]),
            f"{_num(a['held_out_l1_published'])} -> {_num(a['held_out_l1_reconstructed'])}",
        ]
        rows.append(row)
    return lines + _table(header, rows)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """ROC per recognizer and TAR bars at each FAR; none without verification."""
    verification = results.get("verification")
    if not verification:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, r in verification["recognizers"].items():
        fig, ax = plt.subplots(figsize=(6, 5))
        for cond, c in r["conditions"].items():
            if "roc" in c:
                ax.plot(np.maximum(c["roc"]["far"], 1e-4), c["roc"]["tar"], label=cond)
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_xlabel("FAR")
        ax.set_ylabel("TAR")
        ax.set_title(f"{name}: genuine pairs (second image: condition) vs clean impostors")
        ax.legend(fontsize=7)
        written.append(out / f"roc-{name}.png")
        _save(fig, written[-1])
    conditions = list(next(iter(verification["recognizers"].values()))["conditions"])
    names = list(verification["recognizers"])
    for far in FARS:
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(conditions)), 4))
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            rows = verification["recognizers"][name]["conditions"]
            values = [100 * rows[c][f"tar@{far:g}"] for c in conditions]
            ax.bar(np.arange(len(conditions)) + k * width, values, width, label=name)
        ax.set_xticks(
            np.arange(len(conditions)) + 0.4 - width / 2, conditions, rotation=30, ha="right"
        )
        ax.set_ylabel(f"TAR % at FAR {100 * far:g}%")
        ax.legend()
        written.append(out / f"tar-far{far:g}.png")
        _save(fig, written[-1])
    return written


def image_grid(probes: dict[str, ProbeResult], out: Path) -> Path | None:
    """One row per kept probe: original | anonymized | de-anonymized | wrong keys | others,
    cropped around the face region."""
    from PIL import Image

    kept = {n: p.images for n, p in probes.items() if p.images is not None and p.faces}
    if not kept:
        return None
    conditions = [c for c in CONDITION_ORDER if any(c in im for im in kept.values())]
    conditions += sorted({c for im in kept.values() for c in im} - {*conditions, "region"})
    from PIL import ImageDraw

    cell, label = 160, 28
    sheet = Image.new("RGB", (cell * len(conditions), label + cell * len(kept)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, cond in enumerate(conditions):
        for line, text in enumerate(cond.replace(": ", ":\n").splitlines()):
            draw.text((col * cell + 4, 2 + 12 * line), text, fill="black")
    for row, images in enumerate(kept.values()):
        ys, xs = np.nonzero(images["region"])
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = 0.75 * max(ys.max() - ys.min(), xs.max() - xs.min()) + 4
        h, w = images["region"].shape
        box = (
            int(max(0, cx - half)),
            int(max(0, cy - half)),
            int(min(w, cx + half)),
            int(min(h, cy + half)),
        )
        for col, cond in enumerate(conditions):
            if cond in images:
                tile = Image.fromarray(images[cond]).crop(box).resize((cell, cell))
                sheet.paste(tile, (col * cell, label + row * cell))
    path = out / "examples.png"
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
    write_atomic(out / "examples.txt", "rows:\n" + "\n".join(kept) + "\n")
    return path


def write(
    results: dict[str, Any], config: dict[str, Any], probes: dict[str, ProbeResult], out: Path
) -> list[Path]:
    """Everything into ``out`` (created): JSON, Markdown, plots, image grid."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps({"config": config, "results": results}, indent=1))
    write_atomic(out / "report.md", markdown(results, config))
    written = [out / "results.json", out / "report.md", *plots(results, out)]
    grid = image_grid(probes, out)
    return written + ([grid] if grid else [])


def rerender(out: Path) -> list[Path]:
    """Rewrite ``report.md`` and the plots of a report folder from its ``results.json``."""
    saved = json.loads((out / "results.json").read_text())
    write_atomic(out / "report.md", markdown(saved["results"], saved["config"]))
    return [out / "report.md", *plots(saved["results"], out)]


if __name__ == "__main__":
    import sys

    for folder in sys.argv[1:]:
        print("\n".join(str(p) for p in rerender(Path(folder))))
