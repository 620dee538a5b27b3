"""Every face of a photo replaced: each aligned crop cut out, transformed (the reversible
method, its inverse, HYDRO or a classic method), and pasted back over its feathered region.

Anonymization and de-anonymization with keyflip are the same call (the map is its own inverse);
the classic methods use the same faces and masks. Pixels outside the pasted face regions stay
byte-identical to the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from faceanon.faces.align import warp_to_crop
from faceanon.faces.blend import paste_back
from faceanon.faces.masks import Mask, feathered

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.methods.display import Steady
    from faceanon.methods.keyflip import Progress
    from faceanon.secure.container import Box, Geometry
    from faceanon.secure.keys import SecretKey

FEATHER = 1 / 64  # feather radius, as a fraction of the crop side (4 px at 256)

Residuals = list[np.ndarray | None]  # a lossy file's exact face data, per crop (media.latents)
CropTransform = Callable[
    [list[np.ndarray], list[Mask], list[bytes | None], Residuals], list[np.ndarray]
]


def classic(method: Callable[[Sequence[np.ndarray]], list[np.ndarray]]) -> CropTransform:
    """A classic method (blur, pixelate, solid) as a crop transform: masks and nonces unused."""
    return lambda crops, masks, nonces, residuals: method(crops)


def keyflip(
    anonymizer: Anonymizer,
    key: SecretKey,
    batch_size: int,
    progress: Progress | None = None,
    undo: bool = False,
    plain: list[np.ndarray] | None = None,
    steady: Steady | None = None,
) -> CropTransform:
    """The reversible method (``undo``: its inverse) as a crop transform, ``batch_size`` crops
    per network call. ``plain`` given and the anonymizer has a ``display``: the transform gives
    the faces as photos show them, and appends the exact ones, which the key undoes, to
    ``plain`` in the same order (as :func:`hide`); ``steady``: a video's, which blends each
    shown face with its track's last one."""

    def run(
        crops: list[np.ndarray], masks: list[Mask], nonces: list[bytes | None], r: Residuals
    ) -> list[np.ndarray]:
        if plain is None or undo or anonymizer.display is None:
            return anonymizer.apply(crops, key, masks, nonces, progress, undo, r)
        shown: list[np.ndarray] = []
        plain.extend(anonymizer.apply(crops, key, masks, nonces, progress, undo, r, shown))
        return shown if steady is None else steady(shown, nonces)

    return _in_batches(batch_size, run)


def hide(
    anonymizer: Anonymizer,
    key: SecretKey,
    guide: str,
    scale: float | None,
    batch_size: int,
    progress: Progress | None = None,
    plain: list[np.ndarray] | None = None,
) -> CropTransform:
    """``--method hide`` (:meth:`Anonymizer.hide`) as a crop transform: the guided faces; the
    unguided ones, which the key undoes, are appended to ``plain`` in the same order."""

    def run(
        crops: list[np.ndarray], masks: list[Mask], nonces: list[bytes | None], _: Residuals
    ) -> list[np.ndarray]:
        unguided, guided = anonymizer.hide(crops, key, masks, nonces, guide, scale, progress)
        if plain is not None:
            plain.extend(unguided)
        return guided

    return _in_batches(batch_size, run)


def hydro(
    anonymizer: Anonymizer,
    strength: float,
    repeats: int,
    batch_size: int,
    progress: Progress | None = None,
    seed: int | None = None,
) -> CropTransform:
    """The irreversible method (:meth:`Anonymizer.deidentify`) as a crop transform. ``seed``:
    repeatable randomness, for evaluations only (default: fresh from the operating system)."""
    seeds = None if seed is None else np.random.default_rng(seed)

    def run(
        crops: list[np.ndarray], masks: list[Mask], _: list[bytes | None], __: Residuals
    ) -> list[np.ndarray]:
        batch_seed = None if seeds is None else int(seeds.integers(2**62))
        return anonymizer.deidentify(crops, masks, strength, repeats, progress, batch_seed)

    return _in_batches(batch_size, run)


def _in_batches(batch_size: int, transform: CropTransform) -> CropTransform:
    """``transform`` run on ``batch_size`` crops at a time (one network batch each)."""

    def run(
        crops: list[np.ndarray],
        masks: list[Mask],
        nonces: list[bytes | None],
        residuals: Residuals,
    ) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(crops), batch_size):
            part = slice(i, i + batch_size)
            out += transform(crops[part], masks[part], nonces[part], residuals[part])
        return out

    return run


COVERED = 0.9  # share of a face's box the output must cover (issue 32)


def box_coverage(
    g: Geometry, box: Box, shape: tuple[int, ...], grid: tuple[int, int] = (256, 256)
) -> float:
    """Share of ``box`` (clipped to the photo of ``shape``) that the paste of ``g`` replaces
    (its weight at least one half): how much of a counted face the output covers."""
    import cv2

    height, width = shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    if x0 >= x1 or y0 >= y1:
        return 0.0
    size = g.alignment.size
    weight = feathered(g.mask, grid, size, radius=FEATHER * size)
    to_box = g.alignment.inverse - np.array([[0, 0, x0], [0, 0, y0]], dtype=np.float64)
    w = cv2.warpAffine(weight, to_box, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
    return float((w >= 0.5).mean())


def transform_photos(
    photos: Sequence[np.ndarray],
    geometry: Sequence[Sequence[Geometry]],
    nonces: Sequence[Sequence[bytes | None]],
    transform: CropTransform,
    grid: tuple[int, int],
    residuals: Sequence[Sequence[np.ndarray | None] | None] | None = None,
) -> list[np.ndarray]:
    """Each photo with each of its faces cut out, transformed and pasted back.

    ``grid`` is the latent grid the mask was applied on: the pasted region covers every cell
    the method may have changed, grown and feathered by ``FEATHER``. ``residuals``: per photo,
    its exact face data (one per face) or None.
    """
    crops: list[np.ndarray] = []
    masks: list[Mask] = []
    flat_nonces: list[bytes | None] = []
    flat_residuals: Residuals = []
    owners: list[tuple[int, Geometry]] = []
    for i, (photo, faces, face_nonces) in enumerate(zip(photos, geometry, nonces, strict=True)):
        given = residuals[i] if residuals is not None else None
        for j, (g, nonce) in enumerate(zip(faces, face_nonces, strict=True)):
            crops.append(warp_to_crop(photo, g.alignment))
            masks.append(g.mask)
            flat_nonces.append(nonce)
            flat_residuals.append(None if given is None else given[j])
            owners.append((i, g))
    changed = transform(crops, masks, flat_nonces, flat_residuals) if crops else []
    out = [np.asarray(p) for p in photos]
    for (i, g), crop in zip(owners, changed, strict=True):
        size = g.alignment.size
        weight = feathered(g.mask, grid, size, radius=FEATHER * size)
        out[i] = paste_back(out[i], crop, g.alignment, weight)
    return out
