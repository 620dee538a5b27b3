"""Detection recall on hard synthetic cases with exact ground truth (issue 18).

The astronaut's face (NASA, public domain) is cut out with a soft elliptical edge and pasted
into public-domain/CC0 scikit-image backgrounds (coffee, rocket, Hubble deep field, the cat
Chelsea: a non-human face for false positives) at many sizes, cut by each border, turned,
partly covered, darkened, motion-blurred and JPEG-compressed. A face counts as found when a
detection overlaps its visible box with IoU >= 0.3; every other detection is a false positive.
The backgrounds alone give the false positives of photos without faces.

    python benchmarks/recall.py --config high        # faceanon's default vs the photo as is
    python benchmarks/recall.py --config pad upscale # other configurations to compare
    python benchmarks/recall.py --config high --photos ../shared/data/celeba-wild --limit 250 \
        --sheet extra.png                            # real photos: what "high" adds, to judge
    python benchmarks/recall.py --config high --photos ../shared/data/celeba-wild/images \
        --checked benchmarks/celeba_wild_faces.json  # the hand-checked faces

Prints one table per configuration: recall per category, false positives per photo, and the
detection time per photo as a ratio to the ``standard`` one's (the photo as is), timed in the
same run.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Case:
    category: str
    photo: np.ndarray
    faces: list[Box]  # visible part of each face, clipped to the photo


def _sprite() -> tuple[np.ndarray, np.ndarray, Box]:
    """The astronaut's face with margin, its soft alpha, and the face box inside it."""
    from skimage import data

    from faceanon.faces.detect import make_detector

    photo = data.astronaut()
    x0, y0, x1, y1 = make_detector("yunet").detect(photo)[0].box
    w, h = x1 - x0, y1 - y0
    left, top = int(x0 - 0.35 * w), int(y0 - 0.35 * h)
    right, bottom = int(x1 + 0.35 * w), int(y1 + 0.25 * h)
    sprite = photo[top:bottom, left:right].copy()
    sh, sw = sprite.shape[:2]
    yy, xx = np.mgrid[0:sh, 0:sw]
    ellipse = ((xx - sw / 2) / (sw / 2)) ** 2 + ((yy - sh / 2) / (sh / 2)) ** 2
    alpha = np.clip((1.0 - ellipse) * 4, 0, 1).astype(np.float32)
    return sprite, alpha, (x0 - left, y0 - top, x1 - left, y1 - top)


def _backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("coffee", "rocket", "hubble_deep_field", "chelsea"):
        image = getattr(data, name)()
        scale = 640 / max(image.shape[:2])
        out.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return out


def _paste(
    background: np.ndarray, side: float, centre: tuple[float, float], angle: float = 0.0
) -> tuple[np.ndarray, Box]:
    """Paste the face so its box side is ``side`` px, centred at ``centre``, turned by
    ``angle`` degrees; return the photo and the face's box (axis-aligned, clipped)."""
    sprite, alpha, (fx0, fy0, fx1, fy1) = SPRITE
    scale = side / max(fx1 - fx0, fy1 - fy0)
    fcx, fcy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    matrix = cv2.getRotationMatrix2D((fcx, fcy), angle, scale)
    matrix[:, 2] += np.array(centre) - np.array([fcx, fcy])
    h, w = background.shape[:2]
    warped = cv2.warpAffine(sprite, matrix, (w, h), flags=cv2.INTER_AREA)
    weight = cv2.warpAffine(alpha, matrix, (w, h), flags=cv2.INTER_LINEAR)[:, :, None]
    photo = (background * (1 - weight) + warped * weight).round().astype(np.uint8)
    corners = np.array([[fx0, fy0, 1], [fx1, fy0, 1], [fx1, fy1, 1], [fx0, fy1, 1]]) @ matrix.T
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return photo, (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))


def cases() -> Iterator[Case]:
    backgrounds = _backgrounds()
    spots = [(0.3, 0.4), (0.65, 0.55)]

    def placed(side: float, angle: float = 0.0) -> Iterator[tuple[np.ndarray, Box]]:
        for bg in backgrounds:
            for fx, fy in spots:
                h, w = bg.shape[:2]
                yield _paste(bg, side, (fx * w, fy * h), angle)

    for side in (12, 16, 20, 24, 32, 48, 96):
        for photo, box in placed(side):
            yield Case(f"size {side} px", photo, [box])
    for visible in (0.7, 0.5, 0.3):
        for bg in backgrounds:
            h, w = bg.shape[:2]
            side = 100.0
            for edge, centre in (
                ("left", (side * (visible - 0.5), h / 2)),
                ("right", (w - side * (visible - 0.5), h / 2)),
                ("top", (w / 2, side * (visible - 0.5))),
                ("bottom", (w / 2, h - side * (visible - 0.5))),
            ):
                photo, box = _paste(bg, side, centre)
                yield Case(f"cut by the border, {visible:.0%} visible", photo, [box])
                del edge
    for angle in (30, 60, 90):
        for sign in (1, -1):
            for photo, box in placed(80, sign * angle):
                yield Case(f"turned {angle} deg", photo, [box])
    for cover in ("lower half", "eyes band"):
        for photo, box in placed(80):
            x0, y0, x1, y1 = (int(v) for v in box)
            covered = photo.copy()
            if cover == "lower half":
                covered[(y0 + y1) // 2 : y1, x0:x1] = (40, 90, 160)
            else:
                band = int(0.25 * (y1 - y0))
                covered[y0 + band : y0 + 2 * band, x0:x1] = 20
            yield Case(f"covered: {cover}", covered, [box])
    for gain in (0.3, 0.15):
        for photo, box in placed(80):
            yield Case(f"dark x{gain}", (photo * gain).astype(np.uint8), [box])
    for length in (9, 15):
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        for photo, box in placed(80):
            yield Case(f"motion blur {length} px", cv2.filter2D(photo, -1, kernel), [box])
    for quality in (20, 10):
        for photo, box in placed(60):
            buffer = io.BytesIO()
            Image.fromarray(photo).save(buffer, format="JPEG", quality=quality)
            jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            yield Case(f"JPEG q{quality}", jpeg, [box])
    for bg in backgrounds:
        yield Case("no face (backgrounds)", bg, [])


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detector_config(name: str) -> Callable[[np.ndarray], list[Box]]:
    """A named detection configuration -> photo -> boxes."""
    from faceanon.faces.detect import detect_boxes

    return lambda photo: detect_boxes(photo, recall=name)


def extra_on_photos(folder: Path, limit: int, config: str, sheet: Path) -> None:
    """Real photos have no ground truth here: count the faces each configuration finds and
    save a contact sheet of the boxes ``config`` adds, to be judged by eye."""
    from faceanon.faces.detect import detect_boxes
    from faceanon.media.io import read_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    rng = np.random.default_rng(0)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(limit, len(paths)), False))]
    counts, seconds, tiles = [0, 0], [0.0, 0.0], []
    for path in paths:
        image = read_image(path).image
        found = []
        for i, recall in enumerate(("standard", config)):
            started = time.perf_counter()
            found.append(detect_boxes(image, recall=recall))
            seconds[i] += time.perf_counter() - started
            counts[i] += len(found[i])
        for box in found[1]:
            if not any(iou(box, b) > 0.3 for b in found[0]):
                x0, y0, x1, y1 = (int(v) for v in box)
                m = int(0.3 * (x1 - x0))
                crop = image[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m]
                tiles.append(cv2.resize(crop, (96, 96)))
                print(f"{path.name}: added {[round(v) for v in box]}")
    print(
        f"{len(paths)} photos: faces standard {counts[0]}, {config} {counts[1]}, added "
        f"{len(tiles)}; time {config}/standard {seconds[1] / seconds[0]:.2f}x"
    )
    if tiles:
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
        rows = [np.hstack(tiles[i : i + 8]) for i in range(0, len(tiles), 8)]
        Image.fromarray(np.vstack(rows)).save(sheet)


def on_checked(listing: Path, folder: Path, configs: list[str]) -> None:
    """The hand-checked faces: per configuration, how many of them are found and which boxes
    are not among them (to be judged by eye: new faces or false positives)."""
    import json

    from faceanon.faces.detect import detect_boxes
    from faceanon.media.io import read_image

    photos = json.loads(listing.read_text())["photos"]
    total = sum(len(p["faces"]) for p in photos)
    for config in configs:
        found, others = 0, []
        for entry in photos:
            image = read_image(folder / entry["image"]).image
            boxes = detect_boxes(image, recall=config)
            found += sum(any(iou(b, f) >= 0.3 for b in boxes) for f in entry["faces"])
            others += [
                f"{entry['image']} {[round(v) for v in b]}"
                for b in boxes
                if not any(iou(b, f) >= 0.3 for f in entry["faces"])
            ]
        print(f"{config}: {found} of the {total} checked faces; other boxes: {len(others)}")
        for line in others:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["high"])
    parser.add_argument("--only", help="only the categories containing this text")
    parser.add_argument("--photos", type=Path, help="real photos instead (no ground truth)")
    parser.add_argument("--limit", type=int, default=250)
    parser.add_argument("--sheet", type=Path, default=Path("extra.png"))
    parser.add_argument(
        "--border-threshold",
        type=float,
        help="YuNet score from which faces cut by the border are kept (faceanon's "
        "BORDER_THRESHOLD; 0.75, the base threshold, turns that rule off)",
    )
    parser.add_argument(
        "--checked", type=Path, help="hand-checked faces (celeba_wild_faces.json) in --photos"
    )
    args = parser.parse_args()
    if args.border_threshold is not None:
        from faceanon.faces import detect

        detect.BORDER_THRESHOLD = args.border_threshold
    if args.checked is not None:
        on_checked(args.checked, args.photos, list(dict.fromkeys(["standard", *args.config])))
        return
    if args.photos is not None:
        extra_on_photos(args.photos, args.limit, args.config[-1], args.sheet)
        return
    all_cases = [c for c in cases() if args.only is None or args.only in c.category]
    configs = list(dict.fromkeys(["standard", *args.config]))
    timing: dict[str, float] = {}
    for config in configs:
        detect = detector_config(config)
        found: dict[str, list[int]] = {}
        false_pos: dict[str, list[int]] = {}
        started = time.perf_counter()
        for case in all_cases:
            boxes = detect(case.photo)
            hits = [any(iou(b, f) >= 0.3 for b in boxes) for f in case.faces]
            extra = [b for b in boxes if not any(iou(b, f) >= 0.3 for f in case.faces)]
            found.setdefault(case.category, []).extend(int(h) for h in hits)
            false_pos.setdefault(case.category, []).append(len(extra))
        timing[config] = (time.perf_counter() - started) / len(all_cases)
        print(
            f"\n### {config} (detection time per photo: "
            f"{timing[config] / timing['standard']:.2f}x the standard's)\n"
        )
        print("| category | faces | recall | false positives per photo |")
        print("|---|---|---|---|")
        for category, hits in found.items():
            recall = f"{100 * np.mean(hits):.0f}%" if hits else "-"
            print(f"| {category} | {len(hits)} | {recall} | {np.mean(false_pos[category]):.2f} |")
        big = [
            h
            for c, hs in found.items()
            for h in hs
            if not c.startswith("size") or int(c.split()[1]) >= 20
        ]
        print(
            f"\nAll faces of 20 px and more: recall {100 * np.mean(big):.1f}% ({len(big)} faces); "
            f"false positives per photo {np.mean([v for vs in false_pos.values() for v in vs]):.2f}"
        )


SPRITE = _sprite()

if __name__ == "__main__":
    main()
