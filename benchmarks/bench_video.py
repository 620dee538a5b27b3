"""Video benchmarks (issue 13), on clips made by scripts/make_clip.py from the public-domain
astronaut (never from the datasets):

1. speed: frames per second of faceanon (blur; ``--recall standard`` and ``high``) and of
   ``deface`` (its defaults, blur) on the same 720p clip, each also as a ratio to a yardstick
   timed in the same run: a plain PyAV decode + encode of that clip (H.264, CRF 18);
2. coverage: the fraction of face-frames where a face visible in the input is left
   unprocessed, by faceanon with its tracker, faceanon with per-frame detection only (no gap
   filling, no holding) and deface (``--replacewith solid``), on clips with 3 faces turning
   by up to 55 degrees and 4 by up to 70; ground truth: where the clip maker put the
   astronaut's face;
3. memory: peak RSS of ``faceanon anonymize --method blur`` on a short clip and on one 10x
   longer (each in its own process);
4. the reversible method (face-prior, keyflip) with ``--lossless`` FFV1 and with H.264 in MP4
   (the default) at CRF 18, 23 and 28, with its exact face data and without, at 640x360 and
   1280x720: file size, speed, and PSNR of the restored faces.

    python benchmarks/bench_video.py --deface /tmp/defacevenv/bin/deface --output docs/benchmarks.md

``deface`` is installed in its own virtual environment (it pulls opencv-python 5, which
replaces faceanon's opencv-python-headless 4.13 in a shared one).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docsection import publish

START, END = "<!-- video:start -->", "<!-- video:end -->"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _yardstick(src: Path, dst: Path) -> float:
    """fps of a plain decode + H.264 encode with PyAV."""
    import av

    started = time.perf_counter()
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        vin = source.streams.video[0]
        stream = out.add_stream("libx264", rate=vin.average_rate)
        stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p"
        stream.options = {"crf": "18"}
        n = 0
        for frame in source.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    return n / (time.perf_counter() - started)


def _run(command: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in MiB of the command's process tree's largest process)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " code)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True
    )
    seconds, rss, code = out.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(f"failed: {' '.join(command)}\n{out.stderr[-2000:]}")
    return float(seconds), int(rss) // 1024


def _truth(frames: int, size: tuple[int, int], copies: int, turn: float) -> list[list[tuple]]:
    """Per frame, the box of each copy's face (where the clip maker put it), if mostly inside."""
    import cv2
    from make_clip import placement
    from skimage import data

    from faceanon.faces.finder import FaceFinder

    photo = data.astronaut()
    x0, y0, x1, y1 = FaceFinder(recall="standard").find(photo)[0].box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    width, height = size
    out = []
    for i in range(frames):
        boxes = []
        for x, y, side, angle in placement(i, frames, width, height, copies, turn):
            scale = side / photo.shape[0]
            turn_m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
            points = (corners * scale) @ turn_m[:, :2].T + turn_m[:, 2] + [x, y]
            bx0, by0 = points.min(axis=0)
            bx1, by1 = points.max(axis=0)
            inside_w = max(0.0, min(bx1, width) - max(bx0, 0))
            inside_h = max(0.0, min(by1, height) - max(by0, 0))
            if inside_w * inside_h >= 0.5 * (bx1 - bx0) * (by1 - by0):
                boxes.append((bx0, by0, bx1, by1))
        out.append(boxes)
    return out


def _unprocessed(original: Path, result: Path, truth: list[list[tuple]]) -> tuple[int, int]:
    """(face-frames left as they were, visible face-frames): a face counts as processed if
    the centre half of its box changed by more than 25 grey levels on average."""
    left = total = 0
    for boxes, a, b in zip(truth, _frames(original), _frames(result), strict=True):
        for x0, y0, x1, y1 in boxes:
            cx0, cx1 = int(max(0, x0 + (x1 - x0) / 4)), int(min(a.shape[1], x1 - (x1 - x0) / 4))
            cy0, cy1 = int(max(0, y0 + (y1 - y0) / 4)), int(min(a.shape[0], y1 - (y1 - y0) / 4))
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            diff = np.abs(a[cy0:cy1, cx0:cx1].astype(int) - b[cy0:cy1, cx0:cx1]).mean()
            total += 1
            left += diff <= 25
    return left, total


def _psnr_faces(original: Path, result: Path, changed_in: Path) -> float:
    errors = []
    for a, b, c in zip(_frames(original), _frames(result), _frames(changed_in), strict=True):
        where = (a != c).any(axis=-1)
        errors.append(((a.astype(np.float64) - b)[where] ** 2).mean())
    return float(10 * np.log10(255.0**2 / np.mean(errors)))


def _document(path: Path) -> dict:  # type: ignore[type-arg]
    import av

    from faceanon.media.codec import read_document

    with av.open(str(path)) as container:
        metadata, latents = read_document(path, container)
    return {"metadata": metadata, "latents": latents}


def _exact_data_bytes(path: Path) -> int:
    """Bytes of the exact face data a keyflip H.264 video carries."""
    return sum(len(t) for t in _document(path)["latents"] if t)


def _without_exact_data(path: Path, dst: Path) -> Path:
    """A copy of the keyflip video ``path`` whose document has no exact face data."""
    import shutil

    from faceanon.media.codec import add_document, make_document, read_box, with_attachment

    data = make_document(_document(path)["metadata"], None)
    if path.suffix == ".mkv":
        with_attachment(path, data, dst)
        return dst
    box = read_box(path)
    assert box is not None
    shutil.copyfile(path, dst)
    with open(dst, "r+b") as handle:  # the box is the last thing in the file: cut it off
        handle.truncate(path.stat().st_size - len(box) - 24)
    add_document(dst, data, dst)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deface", default="deface", help="the deface command")
    parser.add_argument("--frames", type=int, default=60, help="frames of the 720p clip")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()
    from make_clip import make_clip

    faceanon = [sys.executable, "-m", "faceanon.apps.cli"]
    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    deface = shutil.which(args.deface) or args.deface
    lines = [
        START,
        "`python benchmarks/bench_video.py --deface DEFACE --output docs/benchmarks.md`",
        "",
    ]

    # 1. Speed on 720p.
    hd = make_clip(work / "hd.mp4", args.frames, (1280, 720), copies=2)
    yard = _yardstick(hd, work / "yard.mp4")
    rows = []
    for label, command in (
        (
            "faceanon blur, --recall standard",
            [
                *faceanon,
                "anonymize",
                str(hd),
                "--method",
                "blur",
                "--recall",
                "standard",
                "-o",
                str(work / "fs.mp4"),
            ],
        ),
        (
            "faceanon blur, --recall high (default)",
            [*faceanon, "anonymize", str(hd), "--method", "blur", "-o", str(work / "fh.mp4")],
        ),
        (
            "deface 1.5.0 (defaults: blur)",
            [deface, str(hd), "-o", str(work / "d.mp4"), "--keep-audio"],
        ),
    ):
        seconds, _ = _run(command)
        fps = args.frames / seconds
        rows.append(f"| {label} | {fps:.1f} | {fps / yard:.2f} |")
    lines += [
        f"Speed, 1280x720, {args.frames} frames, 2 faces (process start and model loading"
        " included):",
        "",
        "| | frames/s | vs decode+encode |",
        "|---|---|---|",
        f"| yardstick: PyAV decode + H.264 encode | {yard:.1f} | 1.00 |",
        *rows,
        "",
    ]

    # 2. Coverage on clips with turning faces.
    from faceanon.faces.finder import FaceFinder
    from faceanon.media.video import anonymize_video

    for frames, size, copies, turn in ((60, (960, 540), 3, 55.0), (60, (960, 540), 4, 70.0)):
        stem = f"turn{turn:.0f}"
        clip = make_clip(work / f"{stem}.mp4", frames, size, copies=copies, turn=turn)
        truth = _truth(frames, size, copies, turn)
        results = {}
        track = work / f"{stem}_track.mp4"
        _run([*faceanon, "anonymize", str(clip), "--method", "solid", "-o", str(track)])
        results["faceanon, tracker (default)"] = _unprocessed(clip, track, truth)
        # Per-frame detection: the same library call without gap filling or holding.
        single = work / f"{stem}_frame.mp4"
        anonymize_video(clip, single, "solid", FaceFinder(), max_gap=0, hold=0, recovery=False)
        results["faceanon, per-frame detection (no tracking)"] = _unprocessed(clip, single, truth)
        theirs = work / f"{stem}_deface.mp4"
        _run([deface, str(clip), "-o", str(theirs), "--replacewith", "solid"])
        results["deface 1.5.0, --replacewith solid"] = _unprocessed(clip, theirs, truth)
        lines += [
            f"Coverage, {size[0]}x{size[1]}, {frames} frames, {copies} faces turning by up to"
            f" {turn:.0f} degrees:",
            "",
            "| | face-frames left unprocessed |",
            "|---|---|",
            *(
                f"| {k} | {left} of {total} ({100 * left / total:.1f}%) |"
                for k, (left, total) in results.items()
            ),
            "",
        ]

    # 3. Memory: short vs 10x longer.
    short = make_clip(work / "short.mp4", 30, (640, 360))
    long = make_clip(work / "long.mp4", 300, (640, 360))
    mem = []
    for clip_path in (short, long):
        _, rss = _run(
            [
                *faceanon,
                "anonymize",
                str(clip_path),
                "--method",
                "blur",
                "--recall",
                "standard",
                "-o",
                str(work / f"m_{clip_path.stem}.mp4"),
            ]
        )
        mem.append(rss)
    lines += [
        f"Memory (`--method blur --recall standard`, 640x360): peak RSS {mem[0]} MiB for 30"
        f" frames, {mem[1]} MiB for 300 frames.",
        "",
    ]

    # 4. Reversible method: lossless vs H.264, and the exact face data's cost.
    small = make_clip(work / "small.mp4", 16, (640, 360))
    large = make_clip(work / "large.mp4", 16, (1280, 720))
    key = work / "k.key"
    subprocess.run([*faceanon, "keygen", "-o", str(key)], check=True, capture_output=True)
    table = []
    for label, clip, extra, name in (
        ("--lossless FFV1 (8 faces per network call)", small, ["--lossless"], "kf.mkv"),
        ("--lossless, --batch-size 1", small, ["--lossless", "--batch-size", "1"], "kf1.mkv"),
        ("H.264 CRF 18 in MP4 (default)", small, [], "kfl.mp4"),
        ("--crf 23", small, ["--crf", "23"], "kfl23.mp4"),
        ("--crf 28", small, ["--crf", "28"], "kfl28.mp4"),
        ("1280x720: --lossless FFV1", large, ["--lossless"], "big.mkv"),
        ("1280x720: H.264 CRF 18 in MP4 (default)", large, [], "big.mp4"),
    ):
        command = ["anonymize", str(clip), "-k", str(key), "--recall", "standard", *extra]
        seconds, _ = _run([*faceanon, *command, "-o", str(work / name)])
        outputs = [(label, name, seconds)]
        if "--lossless" not in extra:  # the same file without its exact face data: the pixels
            bare = _without_exact_data(work / name, work / f"bare_{name}")
            outputs.append((f"{label}, exact face data removed", bare.name, seconds))
        lossless = work / ("big.mkv" if clip is large else "kf.mkv")
        for row_label, output, took in outputs:
            back = work / f"back_{output}.mkv"  # FFV1: the restore itself, not a re-encode
            _run([*faceanon, "deanonymize", str(work / output), "-k", str(key), "-o", str(back)])
            size_kb = (work / output).stat().st_size / 1024
            data_kb = _exact_data_bytes(work / output) / 1024
            bare_kb = (work / f"bare_{name}").stat().st_size / 1024 if data_kb else 0
            ratio = f"{size_kb / bare_kb:.2f}x" if data_kb else ""
            restored = _psnr_faces(clip, back, lossless)
            table.append(
                f"| {row_label} | {size_kb:.0f} kB | {data_kb:.0f} kB | {ratio} |"
                f" {16 / took:.2f} | {restored:.1f} dB |"
            )
    blur_seconds, _ = _run(
        [*faceanon, "anonymize", str(small), "--method", "blur", "-o", str(work / "sb.mp4")]
    )
    table.append(f"| for scale: blur, 640x360 | | | | {16 / blur_seconds:.2f} | |")
    anon_psnr = _psnr_faces(small, work / "kf.mkv", work / "kf.mkv")
    lines += [
        "Reversible method (face-prior, 16 frames, 1 face; input H.264 640x360"
        f" {small.stat().st_size / 2**20:.2f} MiB, 1280x720 {large.stat().st_size / 2**20:.2f}"
        f' MiB; anonymized faces {anon_psnr:.1f} dB). "with / without": the file against the'
        " same file without the exact face data:",
        "",
        "| output | size | of which exact face data | with / without | anonymize frames/s |"
        " restored faces PSNR |",
        "|---|---|---|---|---|---|",
        *table,
        END,
    ]
    publish("\n".join(lines), args.output, START, END, heading="Video (issue 13)")


if __name__ == "__main__":
    main()
