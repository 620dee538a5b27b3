"""The learned reconstruction attack (issue 12) on the classic methods, a first table.

The attacker runs the method on aligned faces of their choice (faces64, first ``--train``
crops aligned by faceanon), trains ``faceanon.eval.attack.Reconstructor`` on (published,
original) pairs for ``--minutes`` per method, and applies it to held-out faces (the next
``--test`` crops: other images, mostly other people; faces64 has no identity labels, so
disjointness of identities is not guaranteed). Reported on the held-out faces: PSNR against the
original of the published face and of the reconstruction, and identity: SFace cosine with the
original (located on the original: the attacker's best case), its mean, and TAR at FAR 1% and
0.1% with thresholds from the clean impostor pairs of the held-out faces.

    python benchmarks/reconstruction_attack.py ../shared/data/faces64 --output docs/evaluation.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from docsection import publish

START, END = "<!-- reconstruction-attack:start -->", "<!-- reconstruction-attack:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="faces64 (zip shards or a folder of crops)")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per method")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    args = parser.parse_args()

    import cv2
    import torch

    from faceanon.eval import attack
    from faceanon.eval.recognizers import FaceLocator, SFaceRecognizer
    from faceanon.methods.classic import Blur, Pixelate, Solid
    from faceanon.training.fit_prior import align_dataset

    torch.set_num_threads(2)
    started = time.monotonic()
    # UTKFace crops fill the frame: their aligned squares are mostly reflected padding (kept).
    limit = int((args.train + args.test) * 1.1)
    aligned = align_dataset(args.data, max_padding=1.0, workers=2, limit=limit)
    crops = [
        ((z.transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        for z in aligned.latents
    ]
    train, test = crops[: args.train], crops[args.train : args.train + args.test]
    print(f"aligned {len(crops)} crops in {time.monotonic() - started:.0f} s")

    locator, sface = FaceLocator(), SFaceRecognizer()

    def big(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (256, 256), interpolation=cv2.INTER_CUBIC)

    located = [locator(big(c)) for c in test]
    keep = [i for i, f in enumerate(located) if f is not None]
    reference = {
        i: sface.embed(big(test[i]), sface.points(big(test[i]), located[i]))  # type: ignore[arg-type]
        for i in keep
    }

    # Thresholds at FAR 1% and 0.1% from the clean impostor pairs (every two held-out faces).
    refs = np.stack([reference[i] for i in keep])
    impostor = (refs @ refs.T)[~np.eye(len(keep), dtype=bool)]
    far1, far01 = np.quantile(impostor, 0.99), np.quantile(impostor, 0.999)

    def identity(images: list[np.ndarray]) -> tuple[float, float, float]:
        cos = []
        for i in keep:
            face = located[i]
            assert face is not None
            vec = sface.embed(big(images[i]), sface.points(big(test[i]), face))
            cos.append(float(vec @ reference[i]))
        values = np.array(cos)
        return float(values.mean()), float(np.mean(values > far1)), float(np.mean(values > far01))

    def psnr(images: list[np.ndarray]) -> float:
        err = np.mean(
            [((a.astype(float) - b) ** 2).mean() for a, b in zip(images, test, strict=True)]
        )
        return float(10 * np.log10(255.0**2 / err))

    rows = []
    for label, method in (
        ("blur 0.04", Blur(0.04)),
        ("blur 0.08", Blur(0.08)),
        ("pixelate 16", Pixelate(16)),
        ("pixelate 8", Pixelate(8)),
        ("solid", Solid()),
    ):
        x, y = attack.to_batch(method(train)), attack.to_batch(train)
        model, record = attack.train(
            x, y, steps=100_000, batch=32, seed=0, time_limit=60 * args.minutes
        )
        published = method(test)
        rebuilt = attack.to_images(attack.reconstruct(model, attack.to_batch(published)))
        pub = identity(published)
        rec = identity(rebuilt)
        rows.append(
            f"| {label} | {psnr(published):.1f} -> {psnr(rebuilt):.1f} |"
            f" {pub[0]:.3f} | {100 * pub[1]:.0f} / {100 * pub[2]:.0f} |"
            f" {rec[0]:.3f} | {100 * rec[1]:.0f} / {100 * rec[2]:.0f} |"
            f" {100 * (rec[1] - pub[1]):+.0f} / {100 * (rec[2] - pub[2]):+.0f} |"
            f" {record.steps} |"
        )
        print(rows[-1])
    command = (
        f"python benchmarks/reconstruction_attack.py {args.data} --train {args.train} --test"
        f" {args.test} --minutes {args.minutes:g} --output docs/evaluation.md"
    )
    section = "\n".join(
        [
            START,
            f"`{command}` ({len(train)} training pairs, {len(keep)} held-out faces located by"
            f" YuNet, 64 px; {time.monotonic() - started:.0f} s)",
            "",
            f"SFace: cosine with the original; TAR % at FAR 1% / 0.1% (thresholds {far1:.3f} /"
            f" {far01:.3f} from {len(impostor)} clean impostor pairs):",
            "",
            "| method | PSNR published -> reconstructed (dB) | published cosine | published TAR"
            " | reconstructed cosine | reconstructed TAR | attack gain (points) | steps |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            END,
        ]
    )
    publish(section, args.output, START, END, heading="Reconstruction attack (issue 12)")


if __name__ == "__main__":
    main()
