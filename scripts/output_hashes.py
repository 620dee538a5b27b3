"""SHA-256 of faceanon's outputs with every random draw fixed, to show a refactor changes no
output (issue 30).

Runs the command line in-process on the public-domain astronaut (a photo and a short clip made
by scripts/make_clip.py) for every method, both key transforms, the embedded backbones, the
ellipse mask, and the restores; ``secrets.token_bytes`` (nonces, seals), ``secrets.randbits``
and unseeded ``numpy.random.default_rng`` (hydro) are replaced by fixed streams. Photos are
hashed as files; videos as their decoded frames plus the metadata attachment (Matroska writes a
random segment id into the file).

    python scripts/output_hashes.py -o before.json
    python scripts/output_hashes.py --check before.json     # exit 1 if any output differs

Hashes depend on the library versions (torch, OpenCV, FFmpeg): compare runs on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

PHOTO_RUNS = {
    "blur": ["--method", "blur"],
    "pixelate": ["--method", "pixelate"],
    "solid": ["--method", "solid"],
    "hydro": ["--method", "hydro", "--backbone", "closed-form", "--steps", "6"],
    "keyflip-mix": ["--backbone", "closed-form", "--steps", "6"],
    "keyflip-flip": ["--backbone", "closed-form", "--steps", "6", "--transform", "flip"],
    "keyflip-ellipse": ["--backbone", "closed-form", "--steps", "6", "--mask", "ellipse"],
    "face-prior": ["--backbone", "face-prior", "--steps", "10"],
    "face-net": ["--backbone", "face-net", "--steps", "10"],
}
VIDEO_RUNS = {
    "video-blur": ["--method", "blur"],
    "video-keyflip": ["--backbone", "closed-form", "--steps", "4", "--lossless"],
}
KEYED = ("keyflip-mix", "keyflip-flip", "keyflip-ellipse", "face-prior", "face-net")


@contextmanager
def fixed_randomness(salt: int = 0) -> Iterator[None]:
    """Deterministic ``secrets.token_bytes``, ``secrets.randbits`` and unseeded
    ``numpy.random.default_rng`` (``salt``: another deterministic sequence)."""
    counter = {"bytes": 0, "rng": 0}
    token_bytes, randbits, default_rng = (
        secrets.token_bytes,
        secrets.randbits,
        np.random.default_rng,
    )

    def fixed_bytes(n: int | None = None) -> bytes:
        counter["bytes"] += 1
        seed = b"bytes%d" % counter["bytes"] + (b"/%d" % salt if salt else b"")
        return hashlib.shake_256(seed).digest(n or 32)

    def fixed_bits(k: int) -> int:
        return int.from_bytes(fixed_bytes((k + 7) // 8), "big") >> (-k % 8)

    def fixed_rng(seed=None):  # type: ignore[no-untyped-def]
        if seed is None:
            counter["rng"] += 1
            seed = 1000 + counter["rng"] + 1_000_000 * salt
        return default_rng(seed)

    secrets.token_bytes, secrets.randbits = fixed_bytes, fixed_bits
    np.random.default_rng = fixed_rng  # type: ignore[assignment]
    try:
        yield
    finally:
        secrets.token_bytes, secrets.randbits = token_bytes, randbits
        np.random.default_rng = default_rng  # type: ignore[assignment]


def video_digest(path: Path) -> str:
    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for stream in container.streams:
            if stream.type == "attachment":
                digest.update(bytes(stream.data))
        for frame in container.decode(video=0):
            digest.update(frame.to_ndarray(format="rgb24").tobytes())
    return digest.hexdigest()


def outputs(work: Path) -> dict[str, str]:
    from make_clip import make_clip
    from PIL import Image
    from skimage import data

    from faceanon.apps.cli import main
    from faceanon.secure.keys import SecretKey

    os.chdir(work)
    Image.fromarray(data.astronaut()).save("a.png")
    make_clip(work / "c.mp4", 6, (320, 180), audio=False)
    Path("k.key").write_text(SecretKey(bytes(range(16))).to_text() + "\n")
    hashes: dict[str, str] = {}

    def run(argv: list[str]) -> None:
        with fixed_randomness():
            code = main(argv)
        if code != 0:
            raise SystemExit(f"faceanon {' '.join(argv)} exited {code}")

    for name, options in PHOTO_RUNS.items():
        key = ["-k", "k.key"] if name in KEYED else []
        run(["anonymize", "a.png", *key, "-o", f"{name}.png", *options])
        hashes[name] = hashlib.sha256(Path(f"{name}.png").read_bytes()).hexdigest()
        if name in KEYED:
            run(["deanonymize", f"{name}.png", "-k", "k.key", "-o", f"{name}-back.png"])
            hashes[f"{name} restored"] = hashlib.sha256(
                Path(f"{name}-back.png").read_bytes()
            ).hexdigest()
    for name, options in VIDEO_RUNS.items():
        key = ["-k", "k.key"] if "keyflip" in name else []
        suffix = ".mkv" if key else ".mp4"
        run(["anonymize", "c.mp4", *key, "-o", f"{name}{suffix}", *options])
        hashes[name] = video_digest(work / f"{name}{suffix}")
        if key:
            run(["deanonymize", f"{name}.mkv", "-k", "k.key", "-o", f"{name}-back.mkv"])
            hashes[f"{name} restored"] = video_digest(work / f"{name}-back.mkv")
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="write the hashes here (JSON)")
    parser.add_argument("--check", type=Path, help="compare with hashes written before")
    args = parser.parse_args()
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        hashes = outputs(Path(tmp))
    os.chdir(here)
    for name, digest in hashes.items():
        print(f"{digest}  {name}")
    if args.output is not None:
        args.output.write_text(json.dumps(hashes, indent=1) + "\n")
    if args.check is not None:
        before = json.loads(args.check.read_text())
        changed = sorted(n for n in before.keys() | hashes.keys() if before.get(n) != hashes.get(n))
        print(f"{len(hashes) - len(changed)} of {len(hashes)} outputs unchanged")
        if changed:
            print("changed: " + ", ".join(changed))
            raise SystemExit(1)


if __name__ == "__main__":
    main()
