"""``--engine ray`` against the local engine on the same folder (issue 15).

    python benchmarks/bench_ray.py --photos 16 [--method keyflip|blur] [--output docs/benchmarks.md]

Builds a folder of photos from the public-domain example photo (shifted and mirrored copies,
one face each), then anonymizes it with the local engine and with Ray (a local instance,
``num_cpus`` = the machine's cores) with 1 and 2 workers, in one run. Reports wall time
(worker start included, model loading included), photos per second and the ratio to the local
engine. ``--method blur`` (no model) isolates the engine's own cost per photo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from functools import partial
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
    import ray

    from faceanon.batch import AnonymizeJob, run_local
    from faceanon.cli import build_parser
    from faceanon.keys import SecretKey
    from faceanon.ray_engine import run_on_ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--method", default="keyflip")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--output", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceanon-bench-ray-"))
    os.chdir(work)
    inputs = make_photos(work / "in", args.photos)
    key = SecretKey(bytes(range(16)))
    rows = []
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
        out = work / f"out-{engine}-{workers}"
        options = build_parser().parse_args(
            [
                "anonymize",
                "in",
                "-k",
                "x.key",
                "--method",
                args.method,
                "--batch-size",
                str(args.batch_size),
                "--workers",
                str(workers),
            ]
        )
        make_job = partial(AnonymizeJob, options, key if args.method == "keyflip" else None)
        entries = [(p, out / f"{p.stem}_anonymized.png") for p in inputs]
        started = time.perf_counter()
        if engine == "local":
            done = list(run_local(make_job(None), entries, args.batch_size, lambda entry: None))
        else:
            done = list(run_on_ray(options, make_job, entries, lambda line: None))
        seconds = time.perf_counter() - started
        assert [r.status for r in done] == ["written"] * len(entries), done
        rows.append((engine, workers, seconds))
        print(f"{engine} x{workers}: {seconds:.1f} s", flush=True)
    ray.shutdown()
    local = rows[0][2]
    lines = [
        f"`python benchmarks/bench_ray.py --photos {args.photos} --method {args.method}"
        f" --batch-size {args.batch_size}` ({os.cpu_count()} cores; wall time, worker start and"
        " model loading included):",
        "",
        "| engine | workers | seconds | photos per second | time / local |",
        "|---|---|---|---|---|",
    ]
    for engine, workers, seconds in rows:
        lines.append(
            f"| {engine} | {workers if engine == 'ray' else '-'} | {seconds:.1f} | "
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
