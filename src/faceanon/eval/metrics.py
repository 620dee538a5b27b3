"""Numbers of the evaluation: embedding similarity, verification (ROC, TAR at a FAR) and image
quality (MSE, PSNR, SSIM), each optionally restricted to a region."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays (or of two vectors: a 0-d array)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dot = np.sum(a * b, axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.asarray(dot / np.maximum(norms, 1e-12))


@dataclass(frozen=True)
class Roc:
    """False and true accept rates at each threshold (accept when score >= threshold),
    thresholds descending, from (0, 0) at +inf to (1, 1) at the lowest score."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    if not len(genuine) or not len(impostor):
        raise ValueError("a ROC needs genuine and impostor scores")
    thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([genuine, impostor]))[::-1]])
    # Fraction of scores >= t for each t: counts from a sorted array.
    g, i = np.sort(genuine), np.sort(impostor)
    tar = 1.0 - np.searchsorted(g, thresholds, side="left") / len(g)
    far = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    return Roc(far, tar, thresholds)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most ``far`` of the impostor scores are accepted
    (accept when score >= threshold)."""
    scores = np.sort(np.asarray(impostor, np.float64))[::-1]
    if not len(scores):
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far * len(scores) + 1e-9))  # false accepts allowed
    if allowed >= len(scores):
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


def accept_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` >= ``threshold``: TAR on genuine pairs, FAR on impostor pairs."""
    scores = np.asarray(scores, np.float64)
    return float(np.mean(scores >= threshold)) if len(scores) else float("nan")


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midway between two neighbouring scores) with the best accuracy."""
    order = np.argsort(scores)
    s, y = np.asarray(scores, np.float64)[order], np.asarray(same, bool)[order]
    # Threshold below s[k]: the k lowest are rejected; correct = rejected impostors + accepted.
    rejected_impostors = np.concatenate([[0], np.cumsum(~y)])
    accepted_genuine = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    k = int(np.argmax(rejected_impostors + accepted_genuine))
    if k == 0:
        return float(s[0] - 1.0)
    if k == len(s):
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Verification accuracy the LFW way: for each fold, the threshold with the best accuracy
    on the other folds, applied to it. Returns mean and std over the folds."""
    scores, same, folds = np.asarray(scores), np.asarray(same, bool), np.asarray(folds)
    accuracies = []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_accuracy_threshold(scores[~test], same[~test])
        accuracies.append(np.mean((scores[test] >= threshold) == same[test]))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def _pixels(
    a: np.ndarray, b: np.ndarray, where: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if where is not None:
        return a[where], b[where]
    return a, b


def mse(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean squared error in 8-bit units over all channels; ``where`` (H, W) bool: only there."""
    x, y = _pixels(a, b, where)
    return float(np.mean((x - y) ** 2)) if x.size else float("nan")


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB for 8-bit images (inf when identical)."""
    error = mse(a, b, where)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (scikit-image, 7x7 window, 8-bit range), averaged over channels."""
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    channel_axis = 2 if a.ndim == 3 else None
    _, full = structural_similarity(  # type: ignore[no-untyped-call]
        a, b, data_range=255, channel_axis=channel_axis, full=True
    )
    return np.asarray(full.mean(axis=2) if a.ndim == 3 else full)


def ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean SSIM over the image or over ``where``."""
    per_pixel = ssim_map(a, b)
    return float(per_pixel[where].mean() if where is not None else per_pixel.mean())


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))
