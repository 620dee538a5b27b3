"""``--engine ray`` against the local engine on the same folder (issue 15).

    python benchmarks/bench_ray.py --photos 16 [--method keyflip|blur] [--output docs/benchmarks.md]

Builds a folder of photos from the public-domain example photo (shifted and mirrored copies,
one face each), then runs ``faceanon anonymize`` on it with the local engine and with
``--engine ray`` (a new local Ray instance each time) with 1 and 2 workers (one CPU thread
each, Ray's default for an actor), one after the other in one run. Reports the wall time of
each command (everything included), photos per second and the ratio to the local engine.
``--method blur`` (no model) isolates the engine's own cost per photo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_photos(folder: Path, count: int) -> list[Path]:
    root = Path(__file__).resolve().parents[1]
    photo = np.asarray(Image.open(root / "examples" / "astronaut.jpg").convert("RGB"))
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        image = np.roll(photo, 17 * i, axis=1)
        image = image[:, ::-1] if i % 2 else image
        paths.append(folder / f"p{i:03d}.png")
        Image.fromarray(np.ascontiguousarray(image)).save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--method", default="keyflip")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--output", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceanon-bench-ray-"))
    make_photos(work / "in", args.photos)
    faceanon = [sys.executable, "-m", "faceanon.apps.cli"]
    subprocess.run([*faceanon, "keygen", "-o", "my.key"], cwd=work, check=True, capture_output=True)
    cores = os.cpu_count() or 1
    rows = []
    configs = [("local", 1, cores), ("ray", 1, 1), ("ray", 2, 1)]
    for engine, workers, cpus in configs:
        out = f"out-{engine}-{workers}x{cpus}"
        command = [*faceanon, "anonymize", "in", "-k", "my.key", "-o", out, "--method"]
        command += [args.method, "--batch-size", str(args.batch_size), "--engine", engine]
        command += ["--workers", str(workers)]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        summary = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        if done.returncode != 0 or f"written {args.photos}," not in summary:
            raise SystemExit(f"{engine} {workers}x{cpus} failed: {done.stderr[-2000:]}")
        rows.append((engine, workers, cpus, seconds))
        print(f"{engine} {workers} x {cpus} CPUs: {seconds:.1f} s", flush=True)
    local = rows[0][3]
    lines = [
        f"`python benchmarks/bench_ray.py --photos {args.photos} --method {args.method}"
        f" --batch-size {args.batch_size}` ({cores} cores; wall time of the whole command:"
        " Python start, Ray start, worker start and model loading included):",
        "",
        "| engine | workers x threads each | seconds | photos per second | time / local |",
        "|---|---|---|---|---|",
    ]
    for engine, workers, cpus, seconds in rows:
        who = f"{workers} x {cpus}" if engine == "ray" else f"- ({cpus} threads)"
        lines.append(
            f"| {engine} | {who} | {seconds:.1f} | "
            f"{args.photos / seconds:.2f} | {seconds / local:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output is not None:
        with args.output.open("a") as handle:
            handle.write("\n" + table)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
