"""Does a tracked person keep one anonymized identity through a video? (issue 27)

A clip of the public-domain astronaut moving and turning (scripts/make_clip.py) is anonymized
with ``keyflip`` and each ``--transform``; in every frame the face is located (YuNet) and
embedded (SFace). Prints the mean cosine between the embeddings of frames of the track
(all pairs), for the original frames and for each transform's anonymized frames: a person who
keeps one anonymized identity gives a cosine near the original's; one whose face changes from
frame to frame, a lower one.

    python benchmarks/track_identity.py --backbone face-net --frames 24
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def track_cosine(images: list[np.ndarray]) -> tuple[float, int]:
    """Mean cosine over all pairs of frames where SFace finds the face, and how many."""
    from faceanon.eval.recognizers import FaceLocator, SFaceRecognizer

    locate, sface = FaceLocator(), SFaceRecognizer()
    vectors = []
    for image in images:
        face = locate(image)
        if face is not None:
            vectors.append(sface.embed(image, sface.points(image, face)))
    v = np.array(vectors)
    if len(v) < 2:
        return float("nan"), len(v)
    cos = v @ v.T
    return float(cos[np.triu_indices(len(v), 1)].mean()), len(v)


def main() -> None:
    from make_clip import make_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="face-net")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--turn", type=float, default=12.0, help="degrees the face turns")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4", args.frames, (640, 360), audio=False, turn=args.turn)
        subprocess.run(["faceanon", "keygen", "-o", str(work / "k.key")], check=True)
        cosine, n = track_cosine(frames(clip))
        print(f"original: mean cosine {cosine:.3f} over {n} frames")
        for transform in ("flip", "mix"):
            out = work / f"{transform}.mkv"
            command = ["faceanon", "anonymize", str(clip), "-k", str(work / "k.key")]
            command += ["-o", str(out), "--backbone", args.backbone, "--transform", transform]
            subprocess.run(command, check=True, capture_output=True)
            cosine, n = track_cosine(frames(out))
            print(f"{transform}: mean cosine {cosine:.3f} over {n} frames")


if __name__ == "__main__":
    main()
