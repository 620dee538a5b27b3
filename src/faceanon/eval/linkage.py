"""The linkage attack (METHOD §8): which of N candidate originals is this anonymized face from?

The transform acts on the inverted noise z_T inside the face. A sign flip keeps every |z_T|, and
inverted latents of real images are not white noise, so the attacker inverts the anonymized
face and every candidate original (the model is public) and ranks the candidates by a statistic
of the masked noise. Two statistics:

- ``magnitude correlation``: Pearson correlation of |z_T| inside the mask, coordinate by coordinate
  (the issue's attack; defeated by anything that moves magnitudes);
- ``sorted magnitudes``: minus the distance between the sorted masked magnitudes (invariant to any
  keyed permutation of the coordinates; defeated only by mixing them);
- ``norm``: minus the difference of the masked noise's norms (what an orthogonal mixing keeps).

The attacker's best case: the true mask of the probe (format 3 hides the polygon) and a
gallery that contains the exact source photo. Probes are the anonymized aligned crops, what the
attacker cuts from a published photo with its public alignment. Top-1 / top-5 accuracy against
chance (1/N, 5/N); ties count against the attacker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.faces.finder import FaceFinder
    from faceanon.faces.masks import Mask
    from faceanon.secure.keys import SecretKey

STATISTICS = ("magnitude correlation", "sorted magnitudes", "norm")


@dataclass(frozen=True, eq=False)
class Face:
    name: str
    crop: np.ndarray  # the aligned crop of the original
    mask: Mask


def _noise(anonymizer: Anonymizer, crops: Sequence[np.ndarray], batch: int) -> np.ndarray:
    from faceanon.eval.methods import inverted_noise

    parts = [
        inverted_noise(anonymizer, crops[i : i + batch]).double().numpy()
        for i in range(0, len(crops), batch)
    ]
    return np.concatenate(parts)


def _scores(
    probe: np.ndarray, gallery: np.ndarray, inside: np.ndarray, statistic: str
) -> np.ndarray:
    """How much each gallery noise (G, c, h, w) looks like the probe's source (higher: more)."""
    p = np.abs(probe[:, inside]).ravel()  # (c * cells,)
    g = np.abs(gallery[:, :, inside]).reshape(len(gallery), -1)
    if statistic == "norm":
        return np.asarray(-np.abs(np.linalg.norm(g, axis=1) - np.linalg.norm(p)))
    if statistic == "sorted magnitudes":
        return np.asarray(-np.linalg.norm(np.sort(g, axis=1) - np.sort(p), axis=1))
    p = (p - p.mean()) / (p.std() + 1e-12)
    g = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + 1e-12)
    return np.asarray(g @ p / len(p))


def linkage_attack(
    anonymizer: Anonymizer,
    key: SecretKey,
    faces: Sequence[Face],
    probes: int,
    galleries: Sequence[int],
    seed: int,
    batch: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{statistic: {"N=100": {"top1", "top5", "chance1", "chance5", "probes"}}}. The first
    ``probes`` faces are anonymized (own random nonce each) and looked for among ``N - 1``
    other faces drawn at random plus their source."""
    if max(galleries) > len(faces):
        raise ValueError(f"a gallery of {max(galleries)} needs that many faces, got {len(faces)}")
    _, h, w = anonymizer.backbone.latent_shape
    probes = min(probes, len(faces))
    rng = np.random.default_rng(seed)
    gallery = _noise(anonymizer, [f.crop for f in faces], batch)
    # Seeded like the rest of the evaluation (the verification's nonces too), so a run repeats.
    draw = np.random.default_rng([seed, 1])
    nonces = [None if anonymizer.paper_mode else draw.bytes(16) for _ in range(probes)]
    anonymized: list[np.ndarray] = []
    for i in range(0, probes, batch):
        part = faces[i : min(i + batch, probes)]
        anonymized += anonymizer.apply(
            [f.crop for f in part], key, [f.mask for f in part], nonces[i : i + batch]
        )
        if progress:
            progress("anonymized probes", len(anonymized), probes)
    public = anonymizer.unshifted(anonymized, [f.mask for f in faces[:probes]])  # anyone can
    probe_noise = _noise(anonymizer, public, batch)
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in STATISTICS}
    for n in galleries:
        ranks: dict[str, list[int]] = {s: [] for s in STATISTICS}
        for i in range(probes):
            others = rng.choice([j for j in range(len(faces)) if j != i], n - 1, replace=False)
            candidates = np.concatenate([[i], others])
            inside = faces[i].mask.grid(h, w)
            for statistic in STATISTICS:
                scores = _scores(probe_noise[i], gallery[candidates], inside, statistic)
                ranks[statistic].append(1 + int((scores[1:] >= scores[0]).sum()))
        for statistic, found in ranks.items():
            r = np.array(found)
            out[statistic][f"N={n}"] = {
                "top1": float((r == 1).mean()),
                "top5": float((r <= 5).mean()),
                "chance1": 1 / n,
                "chance5": min(1.0, 5 / n),
                "probes": float(probes),
            }
    return out


def collect_faces(
    paths: Sequence[Path], finder: FaceFinder, progress: Callable[[str, int, int], None] | None
) -> list[Face]:
    """The largest face of each image, aligned and masked as ``faceanon anonymize`` does."""
    from faceanon.errors import FaceanonError
    from faceanon.faces.align import warp_to_crop
    from faceanon.media.io import read_image

    out = []
    for number, path in enumerate(paths, 1):
        try:
            photo = read_image(path).image
        except FaceanonError:
            continue
        found = finder.find(photo)
        if found:
            face = max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            out.append(
                Face(path.name, warp_to_crop(photo, face.geometry.alignment), face.geometry.mask)
            )
        if progress:
            progress("faces", number, len(paths))
    return out


def markdown(results: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    """{transform: {statistic: {gallery: row}}} -> a Markdown table."""
    lines = [
        "| transform | statistic | gallery | top-1 | top-5 | chance top-1 / top-5 | probes |",
        "|---|---|---|---|---|---|---|",
    ]
    for transform, table in results.items():
        for statistic, rows in table.items():
            for gallery, r in rows.items():
                lines.append(
                    f"| {transform} | {statistic} | {gallery} | {100 * r['top1']:.1f}% | "
                    f"{100 * r['top5']:.1f}% | {100 * r['chance1']:.1f}% / "
                    f"{100 * r['chance5']:.1f}% | {int(r['probes'])} |"
                )
    return "\n".join(lines) + "\n"
