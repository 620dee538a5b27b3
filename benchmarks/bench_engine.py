"""Seconds per face and peak memory of anonymize / deanonymize, against the bare network time.

Each (operation, batch size) runs in a fresh process so its peak RSS is its own. The bare
network time is what the method cannot avoid: its UNet calls (T inversion steps with K calls
each, T sampling steps) plus one encode and one decode, each timed alone in the same process just
before the operation. The
method's own overhead (sign vectors, masks, re-injection, conversions) is the rest.

    python benchmarks/bench_engine.py          # reference-size network, faceanon's defaults
    python benchmarks/bench_engine.py --backbone tiny --steps 5 --batch 1   # quick check

Results replace the engine section of docs/benchmarks.md (--output).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from docsection import publish

from faceanon.diffusion.ddim_settings import DEFAULT_INVERSION, DEFAULT_STEPS

START, END = "<!-- engine-benchmark:start -->", "<!-- engine-benchmark:end -->"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(
    backbone_name: str, steps: int, inversion: str, batch: int, op: str, repeats: int
) -> dict[str, float]:
    """One operation in this process; returns timings in seconds and memory in MiB."""
    import numpy as np
    import torch

    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.registry import load_backbone
    from faceanon.diffusion.ddim_settings import network_calls, parse_inversion
    from faceanon.faces.masks import EllipseMask
    from faceanon.secure.keys import SecretKey

    backbone = load_backbone(backbone_name)
    loaded_mib = _peak_mib()
    size = backbone.image_size
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = backbone.encode(x)  # warm-up of every network
    backbone.decode(z)
    backbone.eps(z, 500)

    def timed(fn):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    encode_s = statistics.median(timed(lambda: backbone.encode(x)) for _ in range(repeats))
    decode_s = statistics.median(timed(lambda: backbone.decode(z)) for _ in range(repeats))
    unet_s = statistics.median(timed(lambda: backbone.eps(z, 500)) for _ in range(2 * repeats))
    bare = network_calls(steps, parse_inversion(inversion)) * unet_s + encode_s + decode_s

    # Time spent inside the UNet during the run itself, for the overhead share.
    inner = 0.0
    eps = backbone.eps

    def counted(latents, t):  # type: ignore[no-untyped-def]
        nonlocal inner
        start = time.perf_counter()
        out = eps(latents, t)
        inner += time.perf_counter() - start
        return out

    backbone.eps = counted  # type: ignore[method-assign]
    anonymizer = Anonymizer(backbone, steps, inversion=inversion)
    key = SecretKey.generate()
    masks = [EllipseMask()] * batch
    if op == "anonymize":
        total = timed(lambda: anonymizer.anonymize_batch(faces, key))
    else:
        nonces = [bytes(16)] * batch
        total = timed(lambda: anonymizer.deanonymize_batch(faces, key, masks, nonces))
    return {
        "total_s": total,
        "per_face_s": total / batch,
        "bare_s": bare,
        "ratio": total / bare,
        "unet_call_s": unet_s,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "unet_inside_run_s": inner,
        "loaded_mib": loaded_mib,
        "peak_mib": _peak_mib(),
    }


def _table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1) if found else cpu
    lines = [
        START,
        "## Engine: anonymize / deanonymize, aligned 256x256 faces",
        "",
        f"Backbone `{args.backbone}`, T = {args.steps}, inversion {args.inversion}, float32, "
        f"CPU: {cpu}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}. Command: `python benchmarks/bench_engine.py "
        f"--backbone {args.backbone} --steps {args.steps} --inversion {args.inversion} "
        f"--batch {' '.join(map(str, args.batch))}`.",
        "",
        "| operation | batch | s / face | total s | bare network s | total / bare | "
        "UNet call s | encode s | decode s | UNet s inside run | overhead s | "
        "peak RSS MiB (after load) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r: dict[str, float] = row["result"]  # type: ignore[assignment]
        overhead = r["total_s"] - r["unet_inside_run_s"] - r["encode_s"] - r["decode_s"]
        lines.append(
            f"| {row['op']} | {row['batch']} | {r['per_face_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['bare_s']:.1f} | {r['ratio']:.3f} | {r['unet_call_s']:.2f} | "
            f"{r['encode_s']:.2f} | {r['decode_s']:.2f} | {r['unet_inside_run_s']:.1f} | "
            f"{overhead:.2f} ({100 * overhead / r['total_s']:.1f}%) | "
            f"{r['peak_mib']:.0f} ({r['loaded_mib']:.0f}) |"
        )
    lines += [
        "",
        "Bare network = the run's UNet calls (inversion and sampling) + one encode + one decode, "
        "each timed alone (median of --repeats calls) in the same process right before the "
        "operation. Target: total / bare <= 1.05. Overhead = total - UNet time measured inside "
        "the run - encode - decode: what the method adds around the networks (sign vectors, "
        "masks, re-injection, conversions); it does not depend on the machine's drift between "
        "the bare timing and the run.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="reference-random")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--inversion", default=DEFAULT_INVERSION)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5, help="bare timings of each network")
    parser.add_argument(
        "--output", type=Path, help="markdown file whose engine section is replaced"
    )
    parser.add_argument("--child", nargs=2, metavar=("OP", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        op, batch = args.child[0], int(args.child[1])
        result = measure(args.backbone, args.steps, args.inversion, batch, op, args.repeats)
        print(json.dumps(result))
        return

    rows = []
    for batch in args.batch:
        for op in ("anonymize", "deanonymize"):
            cmd = [
                sys.executable,
                __file__,
                "--backbone",
                args.backbone,
                "--steps",
                str(args.steps),
                "--inversion",
                args.inversion,
                "--repeats",
                str(args.repeats),
                "--child",
                op,
                str(batch),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"op": op, "batch": batch, "result": result})
            print(json.dumps(rows[-1]), flush=True)
    publish(_table(rows, args), args.output, START, END)


if __name__ == "__main__":
    main()
