"""The evaluation protocols of the seed paper (METHOD §9), plus wrong keys and the key-reuse attack.

Every image is processed the way ``faceanon anonymize`` processes a photo (detect, align, mask,
transform, paste back). Each *method* turns a photo into one or more *conditions* (``blur 0.04``;
``keyflip: anonymized``, ``keyflip: de-anonymized``, ...); each condition of each probe image is
embedded by every recognizer at the alignment points found on the original, and compared with
the original pixel by pixel.

- similarity (Table 1): cosine original <-> condition, mean +- std per recognizer;
- verification (Table 2): threshold at FAR <= 0.1% (and 1%) on the clean impostor pairs, then
  TAR with the second image of each pair replaced by its condition;
- recovery quality: MSE / PSNR / SSIM on the face region and the whole image, and the change
  outside the face region;
- key reuse (METHOD §8): :class:`faceanon.eval.methods.KeyReuseAttack`.

The data come from :mod:`faceanon.eval.datasets`, the conditions from
:mod:`faceanon.eval.methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.eval import metrics
from faceanon.eval.datasets import EvaluationError, Original, Originals, Pair, read_probe
from faceanon.eval.methods import KeyReuseAttack, Method
from faceanon.eval.recognizers import FaceLocator, Recognizer

if TYPE_CHECKING:
    from faceanon.faces.finder import Face, FaceFinder


from faceanon.eval.datasets import sample

CLEAN = "clean"


FARS = (0.001, 0.01)


def face_region(shape: tuple[int, ...], faces: Sequence[Face]) -> np.ndarray:
    """(H, W) bool: the pixels inside any face's mask polygon (the region anonymized)."""
    from faceanon.faces.blend import paste_back

    region = np.zeros((*shape[:2], 3), np.uint8)
    for f in faces:
        size = f.geometry.alignment.size
        inside = f.geometry.mask.grid(size, size).astype(np.float32)
        region = paste_back(
            region, np.full((size, size, 3), 255, np.uint8), f.geometry.alignment, inside
        )
    return region[..., 0] > 127


def quality(original: np.ndarray, changed: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Face region, whole image and outside the face region, original vs changed."""
    outside = ~region
    ssim = metrics.ssim_map(original, changed)
    return {
        "psnr_face": metrics.psnr(original, changed, region),
        "ssim_face": float(ssim[region].mean()),
        "mse_face": metrics.mse(original, changed, region),
        "psnr_image": metrics.psnr(original, changed),
        "ssim_image": float(ssim.mean()),
        "psnr_outside": metrics.psnr(original, changed, outside),
        "changed_outside": float(np.mean(np.any(original != changed, axis=-1)[outside])),
    }


@dataclass
class ProbeResult:
    faces: int  # faces the anonymization pipeline found
    embedding: dict[str, dict[str, np.ndarray]]  # condition -> recognizer -> unit vector
    quality: dict[str, dict[str, float]]  # condition -> metric -> value
    images: dict[str, np.ndarray] | None = None  # kept for the report's image grid


def found_again(finder: FaceFinder, image: np.ndarray, faces: Sequence[Face]) -> float:
    """Share of ``faces`` that the finder's detector still finds in ``image`` (a box with
    IoU >= 0.3): does the anonymized photo still show a face where there was one?"""
    from faceanon.faces.detect import iou

    boxes = [d.box for d in finder.detector.detect(image)]
    hits = [any(iou(f.box, b) >= 0.3 for b in boxes) for f in faces]
    return float(np.mean(hits)) if hits else float("nan")


def landmark_shifts(
    finder: FaceFinder, original: np.ndarray, images: dict[str, np.ndarray], faces: Sequence[Face]
) -> dict[str, float]:
    """Pose and expression kept? Per image of ``images``: its 68 landmarks vs the original's, in
    each face's aligned crop (upright, so faces lying sideways count too) and at the original's
    box: mean point distance over the outer-eye-corner distance (the 300-W NME), mean over
    ``faces`` (NaN without faces). 0 for an unchanged face; about 0.1 means points moved a tenth
    of the eye span. The original's landmarks are found once for all the images."""
    from faceanon.faces.align import warp_to_crop

    reference = []
    for f in faces:
        a = f.geometry.alignment
        x0, y0, x1, y1 = f.box
        corners = a.to_crop(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64))
        box = (*corners.min(axis=0), *corners.max(axis=0))
        before = finder.landmarks(warp_to_crop(original, a), box)
        span = max(float(np.linalg.norm(before[36] - before[45])), 1.0)
        reference.append((a, box, before, span))
    out = {}
    for name, image in images.items():
        shifts = []
        for a, box, before, span in reference:
            after = finder.landmarks(warp_to_crop(image, a), box)
            shifts.append(float(np.linalg.norm(before - after, axis=1).mean()) / span)
        out[name] = float(np.mean(shifts)) if shifts else float("nan")
    return out


def process_probe(
    name: str,
    images: Path,
    original: Original,
    finder: FaceFinder,
    methods: Sequence[Method],
    recognizers: Sequence[Recognizer],
    keep_images: bool = False,
) -> ProbeResult:
    photo = read_probe(images, name)
    faces = finder.find(photo)
    conditions: dict[str, np.ndarray] = {}
    for method in methods:
        conditions.update(method.run(photo, faces, name))
    region = face_region(photo.shape, faces)
    embedding = {
        cond: {r.name: r.embed(image, original.points[r.name]) for r in recognizers}
        for cond, image in conditions.items()
    }
    shifts = landmark_shifts(finder, photo, conditions, faces) if faces else {}
    scores = {
        cond: {
            **quality(photo, image, region),
            "face_found": found_again(finder, image, faces),
            "landmark_shift": shifts[cond],
        }
        for cond, image in conditions.items()
        if faces
    }
    kept = (
        {CLEAN: photo, **conditions, "region": region.astype(np.uint8) * 255}
        if keep_images
        else None
    )
    return ProbeResult(len(faces), embedding, scores, kept)


def _summary(values: list[float]) -> dict[str, float]:
    mean, std = metrics.mean_std(values)
    return {"mean": mean, "std": std, "n": int(np.isfinite(values).sum()) if values else 0}


def similarity_table(
    originals: Originals, probes: dict[str, ProbeResult], recognizers: Sequence[Recognizer]
) -> dict[str, dict[str, dict[str, float]]]:
    """Condition -> recognizer -> mean/std/n of cosine(original, condition) over probes."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    conditions = sorted({c for p in probes.values() for c in p.embedding}, key=_order)
    for cond in conditions:
        table[cond] = {}
        for r in recognizers:
            values = [
                float(
                    metrics.cosine(originals.items[n].embedding[r.name], p.embedding[cond][r.name])
                )
                for n, p in probes.items()
                if cond in p.embedding
            ]
            table[cond][r.name] = _summary(values)
    return table


def quality_table(probes: dict[str, ProbeResult]) -> dict[str, dict[str, dict[str, float]]]:
    conditions = sorted({c for p in probes.values() for c in p.quality}, key=_order)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for cond in conditions:
        rows = [p.quality[cond] for p in probes.values() if cond in p.quality]
        table[cond] = {k: _summary([row[k] for row in rows]) for k in rows[0]}
    return table


CONDITION_ORDER = (
    CLEAN,
    "keyflip: anonymized",
    "keyflip: de-anonymized",
    "keyflip: wrong key (1 bit)",
    "keyflip: random key",
    "hide: anonymized",
    "hide: de-anonymized",
    "hide: wrong key (1 bit)",
    "hide: random key",
    "attack: paper mode",
    "attack: nonces",
)


def _order(condition: str) -> tuple[int, str]:
    """Keyflip's conditions first, in the order of the paper's tables, then the rest by name."""
    return (
        (CONDITION_ORDER.index(condition), "")
        if condition in CONDITION_ORDER
        else (len(CONDITION_ORDER), condition)
    )


def impostor_scores(
    names: Sequence[str], identities: dict[str, str], embeddings: dict[str, np.ndarray]
) -> np.ndarray:
    """Cosine scores of every pair of images (each pair once) whose identities differ."""
    known = [n for n in names if n in identities and n in embeddings]
    if len(known) < 2:
        return np.zeros(0)
    e = np.stack([embeddings[n] for n in known]).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    ids = np.array([identities[n] for n in known])
    out = []
    for i in range(0, len(known), 1024):  # blocks: 7,700 LFW images need 30 M scores
        block = e[i : i + 1024] @ e.T
        rows = np.arange(i, min(i + 1024, len(known)))[:, None]
        keep = (np.arange(len(known))[None, :] > rows) & (ids[rows] != ids[None, :])
        out.append(block[keep])
    return np.concatenate(out).astype(np.float64)


BOOTSTRAP = 1000


def bootstrap_interval(
    genuine: np.ndarray, threshold: float, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the TAR over genuine pairs resampled with replacement (the
    threshold held fixed)."""
    if not len(genuine):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    accepted = (genuine >= threshold).astype(np.float64)
    draws = accepted[rng.integers(0, len(accepted), (BOOTSTRAP, len(accepted)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def verification_table(
    pairs: Sequence[Pair],
    originals: Originals,
    probes: dict[str, ProbeResult],
    recognizers: Sequence[Recognizer],
    identities: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per recognizer: clean accuracy (10-fold, the file's pairs), the thresholds at each FAR,
    and per condition the TAR at those thresholds with the second image of each genuine pair
    replaced by the condition, with a bootstrap interval, and the ROC of those genuine scores.

    Every row, the clean one included, uses the same genuine pairs: those whose probe was
    processed and has a score in every condition. Thresholds come from the impostor scores of
    every cross-identity pair of the file's images when ``identities`` are known (LFW: ~30 M
    instead of the file's 3,000), else from the file's impostor pairs."""
    usable = [p for p in pairs if originals.items[p.a].face and originals.items[p.b].face]
    conditions = [CLEAN, *sorted({c for p in probes.values() for c in p.embedding}, key=_order)]
    processed = [c for c in conditions if c != CLEAN]
    evaluated = [
        p
        for p in usable
        if p.same and p.b in probes and all(c in probes[p.b].embedding for c in processed)
    ]
    names = list(dict.fromkeys(n for p in usable for n in (p.a, p.b)))
    result: dict[str, Any] = {
        "pairs": len(pairs),
        "usable_pairs": len(usable),
        "genuine_pairs": sum(p.same for p in usable),
        "impostor_pairs": sum(not p.same for p in usable),
        "genuine_pairs_evaluated": len(evaluated),
        "impostors_from": "every cross-identity image pair" if identities else "the pairs file",
        "bootstrap": BOOTSTRAP,
        "recognizers": {},
    }
    for r in recognizers:

        def score(p: Pair, cond: str, name: str = r.name) -> float:
            if cond == CLEAN:
                probe = originals.items[p.b].embedding[name]
            else:
                probe = probes[p.b].embedding[cond][name]
            return float(metrics.cosine(originals.items[p.a].embedding[name], probe))

        same = np.array([p.same for p in usable])
        clean = np.array([score(p, CLEAN) for p in usable], np.float64)
        accuracy, accuracy_std = metrics.kfold_accuracy(
            clean, same, np.array([p.fold for p in usable])
        )
        if identities:
            embeddings = {n: originals.items[n].embedding[r.name] for n in names}
            impostor = impostor_scores(names, identities, embeddings)
        else:
            impostor = clean[~same]
        thresholds = {far: metrics.threshold_at_far(impostor, far) for far in FARS}
        rows: dict[str, Any] = {}
        for cond in conditions:
            genuine = np.array([score(p, cond) for p in evaluated], np.float64)
            row: dict[str, Any] = {"genuine_pairs": len(genuine)}
            for far, t in thresholds.items():
                row[f"tar@{far:g}"] = metrics.accept_rate(genuine, t)
                row[f"tar@{far:g}_ci"] = list(bootstrap_interval(genuine, t))
            if len(genuine) and len(impostor):
                curve = metrics.roc(genuine, impostor[:: max(1, len(impostor) // 200_000)])
                row["roc"] = {"far": curve.far.tolist(), "tar": curve.tar.tolist()}
            rows[cond] = row
        result["recognizers"][r.name] = {
            "clean_accuracy": accuracy,
            "clean_accuracy_std": accuracy_std,
            "impostors": len(impostor),
            "false_accepts_allowed": {
                f"{far:g}": int(np.floor(far * len(impostor) + 1e-9)) for far in FARS
            },
            "thresholds": {f"{far:g}": t for far, t in thresholds.items()},
            "conditions": rows,
        }
    return result


Stage = Callable[[str, int, int], None]


def run(
    images: Path,
    pairs: Sequence[Pair] | None,
    names: Sequence[str] | None,
    recognizers: Sequence[Recognizer],
    methods: Sequence[Method],
    finder: FaceFinder,
    cache_dir: Path | None = None,
    examples: int = 0,
    progress: Stage | None = None,
    limit: int | None = None,
    seed: int = 0,
    identities: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, ProbeResult]]:
    """Verification over ``pairs`` (probes: the second images of ``limit`` genuine pairs drawn
    under ``seed``; thresholds and clean accuracy from every pair) or similarity over ``names``.
    Returns the numbers and the probe results (the first ``examples`` keep their images)."""
    if (pairs is None) == (names is None):
        raise ValueError("give pairs (verification) or names (similarity)")
    needed = list(dict.fromkeys([n for p in pairs for n in (p.a, p.b)] if pairs else names or []))
    missing = [n for n in needed if not (images / n).is_file()]
    if missing:
        raise EvaluationError(f"{images}: {len(missing)} images missing, first {missing[0]}")
    originals = Originals(images, FaceLocator(), recognizers, cache_dir)
    for i, name in enumerate(needed):
        originals.get(name)
        if progress:
            progress("originals", i + 1, len(needed))
        if (i + 1) % 500 == 0:
            originals.save()
    originals.save()
    located = {n for n in needed if originals.items[n].face is not None}
    if pairs is not None:
        # TAR needs the probes of the genuine pairs only; impostor pairs stay clean.
        genuine = [p for p in pairs if p.same and p.a in located and p.b in located]
        probe_names = list(dict.fromkeys(p.b for p in sample(genuine, limit, seed)))
    else:
        probe_names = [n for n in needed if n in located]
    probes: dict[str, ProbeResult] = {}
    for i, name in enumerate(probe_names):
        probes[name] = process_probe(
            name, images, originals.items[name], finder, methods, recognizers, i < examples
        )
        if progress:
            progress("probes", i + 1, len(probe_names))
    results: dict[str, Any] = {
        "images": len(needed),
        "images_without_face": len(needed) - len(located),
        "originals_from_cache": originals.loaded,
        "probes": len(probes),
        "probes_without_face": sum(1 for p in probes.values() if not p.faces),
        "faces_in_probes": sum(p.faces for p in probes.values()),
        "similarity": similarity_table(originals, probes, recognizers),
        "quality": quality_table(probes),
    }
    if pairs is not None:
        results["verification"] = verification_table(
            pairs, originals, probes, recognizers, identities
        )
    for method in methods:
        if isinstance(method, KeyReuseAttack):
            results["attack"] = {
                "known_image": method.known,
                "sign_agreement": {m: _summary(v) for m, v in method.agreement.items()},
            }
    return results, probes
