"""Do the embedded models' new faces look like faces, and like different people (issue 26)?

    python benchmarks/realism.py --cache .cache/aligned_all.npz --faces 1000 --colour 0.8 \
        --display 0.965 --model src/faceanon/data/face_prior.npz \
        --model src/faceanon/data/face_net.safetensors --grid reports/realism-grid.png

The crops: held-out aligned faces64 crops as in benchmarks/face_net_quality.py (the 5% that
`fit-net` holds out, seed 0, padding at most 0.7), the first ``--faces`` (``--utkface-race 1``:
only UTKFace's crops labelled Black, for dark skin); the cache must hold
the crops' names (written by `fit-net --aligned-cache` since faceanon 0.2). Each model
anonymizes them (keyflip, ellipse mask, one key, one nonce per face, its engine defaults,
without the tone shift); ``--colour A`` adds rows with the tone shift of share A
(faceanon.methods.colour) applied to the same faces; ``--display L`` rows of the faces as
photos show them (faceanon.methods.display: denoised at level L, then each tone shift).
"real" is the same crops' latents decoded by the same model, so both sides go through the
same decoder, and every image is rounded to 8 bits. Per row:

- **Fréchet distance** between the recognizers' embeddings (SFace; ArcFace too when the
  optional extra is installed) of the first half's faces and of the second half's real faces:
  every row compares two sets of the same size and of different people, so the "real" row is
  the distance that sampling alone gives;
- **faces of their own**: the share of pairs of the row's faces of different crops whose
  cosine passes the real faces' threshold at 1% false accepts (the real faces' own share is 1%
  by construction; issue 26's target: at most 2%);
- **YuNet**: the share of faces it finds (score >= 0.75, the crop padded by a quarter of its
  side with its own edge) and their mean score;
- **colour at the border**: CIELAB ΔE (1976) between the mean colour of a 10-px band inside the
  mask's lower half (jaw, cheeks) and (a) of the 10-px band outside it (neck, collar, whatever
  was kept) or (b) of the same band of the person's own face, for the darkest and the lightest
  third of the crops by that outside band's L*. The real faces' (a) is the baseline for (a): a
  fill in one skin tone for everyone shows as a larger ΔE on one side; (b) is 0 for them;
- **speckle and detail** (issue 26's targets): the RMS of the Laplacian of R - G and of the
  luminance inside the ellipse eroded by 6 px, as ratios to the real faces' (colour <= 1.3x,
  luminance >= 0.5x);
- **own person**: the share of faces whose cosine to their own original passes the real
  faces' 1% threshold (what the recognizer still matches; lower is more private).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from faceanon.anonymizer import to_uint8
from faceanon.backbones.registry import load_backbone
from faceanon.diffusion.ddim_settings import ddim_defaults, parse_inversion
from faceanon.errors import ModelUnavailableError
from faceanon.eval.metrics import threshold_at_far
from faceanon.faces.masks import EllipseMask
from faceanon.methods import colour
from faceanon.methods.display import denoised
from faceanon.methods.keyflip import keyflip_latent
from faceanon.secure.keys import SecretKey, sign_vector
from faceanon.training.fit_prior import split

FOUND = 0.75
BAND = 10  # px of the 256-px crop


def utkface_race(name: str) -> int | None:
    """The race label of a UTKFace crop's name (age_gender_race_date...), None for others."""
    parts = name.rsplit("/", 1)[-1].split("_")
    if "utkface/" not in name or len(parts) < 4 or not parts[2].isdigit():
        return None
    return int(parts[2])


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b``."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def embeddings(recognizer: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return torch.cat([recognizer(batch[i : i + 32]) for i in range(0, len(batch), 32)]).numpy()


def pair_scores(e: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Cosines of every pair of different crops (different names)."""
    i, j = np.triu_indices(len(e), k=1)
    keep = names[i] != names[j]
    return np.einsum("nd,nd->n", e[i[keep]], e[j[keep]])


def yunet(images: list[np.ndarray]) -> tuple[float, float]:
    """Share found and mean best score (0 where none), each crop padded with its edge."""
    import cv2

    from faceanon.faces.detect import YuNetDetector

    detector = YuNetDetector(threshold=0.3)
    scores = []
    for image in images:
        pad = image.shape[0] // 4
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = detector.detect(padded)
        scores.append(found[0].score if found else 0.0)
    s = np.array(scores)
    return float((s >= FOUND).mean()), float(s.mean())


def border_colours(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean CIELAB colour of the band inside the mask's lower half and of the
    band outside it (see the module)."""
    import cv2

    side = images[0].shape[0]
    mask = EllipseMask().grid(side, side).astype(np.uint8)
    band = np.ones((2 * BAND + 1,) * 2, np.uint8)
    inside = mask.astype(bool) & ~cv2.erode(mask, band).astype(bool)
    outside = cv2.dilate(mask, band).astype(bool) & ~mask.astype(bool)
    lower = np.arange(side)[:, None] >= side // 2
    inside, outside = inside & lower, outside & lower
    lab = [cv2.cvtColor(i.astype(np.float32) / 255, cv2.COLOR_RGB2LAB) for i in images]
    return np.stack([x[inside].mean(axis=0) for x in lab]), np.stack(
        [x[outside].mean(axis=0) for x in lab]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--max-padding", type=float, default=0.7)
    parser.add_argument(
        "--utkface-race",
        type=int,
        help="only UTKFace crops of this label (its file names: 0 White, 1 Black, 2 Asian,"
        " 3 Indian, 4 Others), e.g. 1 for dark skin",
    )
    parser.add_argument(
        "--colour",
        type=float,
        action="append",
        default=[],
        help="also rows with the face shifted toward the kept skin by this share (repeatable)",
    )
    parser.add_argument(
        "--display",
        type=float,
        action="append",
        default=[],
        help="also rows of the faces as photos show them, denoised at this level (repeatable)",
    )
    parser.add_argument(
        "--grid",
        type=Path,
        help="a PNG: 8 faces, real | each row's faces (dataset images: keep it out of the"
        " repository, e.g. under reports/)",
    )
    args = parser.parse_args()
    from face_net_quality import eroded_region, laplacian_rms

    from faceanon.faces.torch_recognizers import crop_recognizer

    with np.load(args.cache) as cache:
        if "names" not in cache:
            raise SystemExit(
                f"{args.cache}: no crop names (written by an older fit-net: rebuild it)"
            )
        keep = np.flatnonzero(cache["padding"] <= args.max_padding)
        _, held = split(len(keep), 0.05, 0)
        pool = keep[held]
        if args.utkface_race is not None:
            labels = [utkface_race(str(cache["names"][i])) for i in pool]
            pool = pool[[label == args.utkface_race for label in labels]]
        chosen = pool[: args.faces]
        x = torch.from_numpy(cache["latents"][chosen].astype(np.float64))
        names = cache["names"][chosen]
    n = len(x)
    half = n // 2
    mask = torch.from_numpy(EllipseMask().grid(64, 64))[None, None].expand(n, 1, 64, 64)
    key = SecretKey(bytes(range(16)))
    signs = torch.from_numpy(
        np.stack([sign_vector(key, (3, 64, 64), i.to_bytes(16, "big")) for i in range(n)])
    )
    recognizers = {"SFace": crop_recognizer("sface")}
    try:
        recognizers["ArcFace"] = crop_recognizer("arcface")
        recognizers["ArcFace"].graph  # noqa: B018  (loaded: the extra is installed)
    except ModelUnavailableError as error:
        print(f"ArcFace left out: {error}")
    print(f"{n} held-out crops, {len(set(names))} distinct names")
    header = "| faces | model |"
    for r in recognizers:
        header += f" Fréchet, {r} | impostor pairs over the real 1% threshold, {r} |"
        header += f" own person, {r} |"
    header += " YuNet finds | YuNet mean score | ΔE to the kept band, dark / light third |"
    header += " ΔE to the own face's band, dark / light third | colour speckle | luminance detail |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    columns: list[np.ndarray] = []
    region = eroded_region()
    base = (1.0, 1.0)
    shown: list[str] = []
    for file in args.model:
        backbone = load_backbone(model_dir=file)
        steps, inversion = ddim_defaults(backbone.name)
        anon = keyflip_latent(backbone, x, signs, mask, steps, refine=parse_inversion(inversion))
        real: dict[str, np.ndarray] = {}
        thresholds: dict[str, float] = {}
        rows = [("real", x), ("anonymized", anon)]
        rows += [(f"anonymized, colour {a}", colour.shift(anon, mask, a)) for a in args.colour]
        for level in args.display:
            clean = denoised(backbone, anon, mask, level)
            rows.append((f"shown, display {level}", clean))
            rows += [
                (f"shown, display {level}, colour {a}", colour.shift(clean, mask, a))
                for a in args.colour
            ]
        for label, z in rows:
            images = to_uint8(backbone.decode(z.float()))
            if label != "real" or not columns:
                columns.append(np.concatenate(images[:8]))
                shown.append(f"{backbone.name} {label}")
            row = f"| {label} | {backbone.name} |"
            for name, recognizer in recognizers.items():
                e = embeddings(recognizer, images)
                if label == "real":
                    real[name] = e
                    thresholds[name] = threshold_at_far(pair_scores(e, names), 0.01)
                # the first half's faces against the second half's real faces: every row
                # compares two sets of this size and of different people
                distance = f"{frechet(e[:half], real[name][half:]):.3f}"
                share = (pair_scores(e, names) >= thresholds[name]).mean()
                own = (np.einsum("nd,nd->n", e, real[name]) >= thresholds[name]).mean()
                row += f" {distance} | {100 * share:.1f}% | {100 * own:.1f}% |"
            found, score = yunet(images)
            inner, outer = border_colours(images)
            if label == "real":
                own_band = inner
                order = np.argsort(outer[:, 0])  # by the kept skin's lightness
                thirds = order[: n // 3], order[-(n // 3) :]
            row += f" {100 * found:.1f}% | {score:.3f} |"
            for reference in (outer, own_band):
                delta = np.linalg.norm(inner - reference, axis=1)
                row += " " + " / ".join(f"{delta[t].mean():.1f}" for t in thirds) + " |"
            speckle, detail = laplacian_rms(images, region)
            if label == "real":
                base = (speckle, detail)
            row += f" {speckle / base[0]:.2f}x | {detail / base[1]:.2f}x |"
            print(row, flush=True)
    if args.grid is not None:
        from PIL import Image

        Image.fromarray(np.concatenate(columns, axis=1)).save(args.grid)
        print(f"grid written to {args.grid}, columns: " + " | ".join(shown))


if __name__ == "__main__":
    main()
