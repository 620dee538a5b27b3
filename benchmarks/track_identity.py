"""Does a tracked person keep one anonymized identity through a video? (issue 27)

A clip of the public-domain astronaut moving and turning (scripts/make_clip.py) is anonymized
with ``keyflip`` and each ``--transform``; in every frame the face is located (YuNet) and
embedded (SFace). Prints the mean cosine between the embeddings of frames of the track
(all pairs), for the original frames and for each transform's anonymized frames: a person who
keeps one anonymized identity gives a cosine near the original's; one whose face changes from
frame to frame, a lower one. For scale, the mean cosine across the two transforms' frames (two
different anonymized faces of one person, same poses). And the share of each frame's
detection box that the output replaces (a track keeps its first frame's region: does it still
cover the face as it moves and turns?). And the flicker: the mean absolute change inside the
face from one frame to the next, each frame cut with the original frame's alignment (the
face's motion taken out), anonymized against original (issue 28 asks for at most 1.5x).

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


def embeddings(images: list[np.ndarray]) -> np.ndarray:
    """SFace embeddings of the frames where YuNet finds the face."""
    from faceanon.eval.recognizers import FaceLocator, SFaceRecognizer

    locate, sface = FaceLocator(), SFaceRecognizer()
    vectors = []
    for image in images:
        face = locate(image)
        if face is not None:
            vectors.append(sface.embed(image, sface.points(image, face)))
    return np.array(vectors)


def opened(path: Path, key_file: Path) -> tuple[np.ndarray, list[object]]:
    """Per face-frame, the share of its box that the region opened from the video replaces;
    and per frame the first face's geometry as the anonymizer used it (None: no face)."""
    import av

    from faceanon.faces.replace import box_coverage as coverage
    from faceanon.media.video import read_document
    from faceanon.secure.container import Metadata
    from faceanon.secure.keys import read_key_file

    key = read_key_file(key_file)
    with av.open(str(path)) as container:
        records, _ = read_document(path, container)
    shares, used = [], []
    for image, text in zip(frames(path), records, strict=True):
        meta = None if text is None else Metadata.from_json(text)
        geometry = [] if meta is None else meta.open(key, 256) or []
        for face, g in zip(meta.faces if meta else [], geometry, strict=True):
            assert face.box is not None
            shares.append(coverage(g, face.box, image.shape, (64, 64)))
        used.append(geometry[0] if geometry else None)
    return np.array(shares), used


def face_geometry(images: list[np.ndarray]) -> list[object]:
    """Each original frame's face as faceanon finds it (alignment and mask), or None."""
    from faceanon.faces.finder import FaceFinder

    finder = FaceFinder()
    out: list[object] = []
    for image in images:
        faces = finder.find(image)
        out.append(faces[0].geometry if faces else None)
    return out


def flicker(images: list[np.ndarray], geometry: list[object]) -> float:
    """Mean absolute change (8-bit levels) inside the face from one frame to the next, each
    frame's crop cut with the original frame's alignment (so the face's own motion is taken
    out and what is left is what changes in it)."""
    from faceanon.faces.align import warp_to_crop
    from faceanon.faces.masks import feathered

    changes = []
    for t in range(len(images) - 1):
        a, b = geometry[t], geometry[t + 1]
        if a is None or b is None:
            continue
        size = a.alignment.size  # type: ignore[attr-defined]
        inside = feathered(a.mask, (64, 64), size, radius=4.0) >= 0.5  # type: ignore[attr-defined]
        ca = warp_to_crop(images[t], a.alignment).astype(np.float64)  # type: ignore[attr-defined]
        cb = warp_to_crop(images[t + 1], b.alignment).astype(np.float64)  # type: ignore[attr-defined]
        changes.append(np.abs(ca - cb)[inside].mean())
    return float(np.mean(changes))


def track_cosine(v: np.ndarray) -> float:
    """Mean cosine over all pairs of frames."""
    return float((v @ v.T)[np.triu_indices(len(v), 1)].mean()) if len(v) > 1 else float("nan")


def main() -> None:
    from make_clip import make_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="face-net")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--turn", type=float, default=12.0, help="degrees the face turns")
    parser.add_argument("options", nargs="*", help="more anonymize options, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4", args.frames, (640, 360), audio=False, turn=args.turn)
        subprocess.run(["faceanon", "keygen", "-o", str(work / "k.key")], check=True)
        original = frames(clip)
        geometry = face_geometry(original)
        v = embeddings(original)
        still = flicker(original, geometry)
        print(
            f"original: mean cosine {track_cosine(v):.3f} over {len(v)} frames;"
            f" flicker {still:.2f} levels"
        )
        anonymized = []
        for transform in ("flip", "mix"):
            out = work / f"{transform}.mkv"
            command = ["faceanon", "anonymize", str(clip), "-k", str(work / "k.key")]
            command += ["-o", str(out), "--backbone", args.backbone, "--transform", transform]
            command += ["--lossless", *args.options]
            subprocess.run(command, check=True, capture_output=True)
            images = frames(out)
            anonymized.append(embeddings(images))
            v, (shares, used) = anonymized[-1], opened(out, work / "k.key")
            moving = flicker(images, geometry)
            own = flicker(images, used) / flicker(original, used)
            print(
                f"{transform}: mean cosine {track_cosine(v):.3f} over {len(v)} frames; flicker"
                f" {moving:.2f} levels ({moving / still:.2f}x the original's; in the"
                f" anonymizer's own crops {own:.2f}x); box covered:"
                f" mean {shares.mean():.1%}, lowest {shares.min():.1%}"
            )
        across = float((anonymized[0] @ anonymized[1].T).mean())
        print(f"flip frames vs mix frames (two anonymized faces): mean cosine {across:.3f}")


if __name__ == "__main__":
    main()
