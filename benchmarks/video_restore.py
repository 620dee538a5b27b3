"""Restoring keyflip videos from H.264 against FFV1, paired (issue 28): the same anonymized
frames (fixed nonces, so each output shows the same new faces) written as ``--lossless`` FFV1
and as H.264 in MP4 at CRF 18, 23 and 28 with their exact face data, each restored with the
key into FFV1, on the astronaut clip of scripts/make_clip.py at 640x360 and 1280x720
(face-prior, the default settings but ``recall="standard"``). Per output: file size, exact face
data, the file against itself without that data, restored face PSNR (inside the faces, against
the input clip), and its difference from the FFV1 restore of the same faces. ``--seeds``:
several sets of nonces (the anonymized faces, hence the restores, change with them).

    python benchmarks/video_restore.py --seeds 3 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from docsection import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
START, END = "<!-- video-restore:start -->", "<!-- video-restore:end -->"
OUTPUTS = (("FFV1 (--lossless)", None), ("H.264 CRF 18", 18), ("CRF 23", 23), ("CRF 28", 28))


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _face_psnr(original: list[np.ndarray], restored: Path, anonymized: Path) -> float:
    """PSNR over the pixels the (lossless) anonymization changed, all frames together."""
    errors = []
    for a, b, c in zip(original, _frames(restored), _frames(anonymized), strict=True):
        where = (a != c).any(axis=-1)
        errors.append(((a.astype(np.float64) - b)[where] ** 2).mean())
    return float(10 * np.log10(255.0**2 / np.mean(errors)))


def _data_bytes(path: Path) -> int:
    import av

    from faceanon.media.codec import read_document

    with av.open(str(path)) as container:
        _, exact = read_document(path, container)
    return sum(len(e) for e in exact if e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="sets of nonces (default 3)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()
    from make_clip import make_clip
    from output_hashes import fixed_randomness

    import faceanon

    key = faceanon.SecretKey(bytes(range(16)))
    settings = faceanon.Settings(recall="standard")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in ((640, 360), (1280, 720)):
            clip = make_clip(work / f"clip{size[0]}.mp4", args.frames, size)
            original = _frames(clip)
            results: dict[str, list[tuple[float, float, float]]] = {}
            for seed in range(args.seeds):
                lossless_psnr = 0.0
                for label, crf in OUTPUTS:
                    out = work / f"{size[0]}-{seed}-{crf}.{'mkv' if crf is None else 'mp4'}"
                    with fixed_randomness(seed):
                        faceanon.anonymize_video(
                            clip, out, key, settings, lossless=crf is None, crf=crf or 18
                        )
                    back = work / f"back-{out.stem}.mkv"
                    faceanon.restore_video(out, back, key)
                    lossless = work / f"{size[0]}-{seed}-None.mkv"
                    score = _face_psnr(original, back, lossless)
                    if crf is None:
                        lossless_psnr = score
                    kb, data = out.stat().st_size / 1024, _data_bytes(out) / 1024
                    results.setdefault(label, []).append((kb, data, score, score - lossless_psnr))
                    print(
                        f"{size[0]}x{size[1]} seed {seed} {label}: {kb:.0f} kB, data"
                        f" {data:.0f} kB, restored {score:.2f} dB",
                        flush=True,
                    )
            for label, crf in OUTPUTS:
                kb, data, score, gap = np.array(results[label]).T
                ratio = f"{np.mean(kb / (kb - data)):.2f}x" if crf is not None else ""
                rows.append(
                    f"| {size[0]}x{size[1]} | {label} | {kb.mean():.0f} kB | {data.mean():.0f}"
                    f" kB | {ratio} | {score.mean():.2f} ({score.min():.2f}-{score.max():.2f})"
                    f" | {'' if crf is None else f'{gap.mean():+.2f} (worst {gap.min():+.2f})'} |"
                )
    section = "\n".join(
        [
            START,
            "`python benchmarks/video_restore.py --seeds"
            f" {args.seeds} --output docs/benchmarks.md`: the astronaut clip, {args.frames}"
            f" frames, 1 face, face-prior, {args.seeds} sets of nonces; each output of a set"
            ' shows the same new faces. Means over the sets (restore: min-max); "with /'
            ' without": the file against itself without the exact face data.',
            "",
            "| clip | output | file | exact face data | with / without | restored face PSNR"
            " (dB) | vs the FFV1 restore (dB) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            END,
        ]
    )
    publish(section, args.output, START, END, "Restoring videos from H.264, paired (issue 28)")


if __name__ == "__main__":
    main()
