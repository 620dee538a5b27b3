"""Fit the embedded face model (``face-prior``, :mod:`faceanon.backbones.face_prior`).

    faceanon fit-prior ../shared/data/faces64 -o face_prior.npz

Data recipe (seeded, deterministic):

1. Every ``*.jpg``/``*.png`` in DATA_DIR's zip shards (or the folder itself), sorted by name.
2. Each crop is enlarged 2x (bicubic), framed on each side by its own size of reflected border
   (so that the FFHQ square, larger than a tight crop, finds pixels around it), and run
   through faceanon's own face finder (YuNet + dlib 68 landmarks, standard recall, upright):
   the face nearest the centre gives the FFHQ alignment the pipeline uses on photos. The
   aligned 256-px crop (``warp_to_crop``) is encoded like the pipeline encodes it (4x area
   downsample to 3 x 64 x 64).
3. The fraction of the aligned crop that lies outside the source crop (filled by reflection)
   is measured; crops more than ``max_padding`` padded are dropped.
4. Each kept crop and its mirror image are the training set (faces are roughly symmetric:
   the mirror doubles the data).
5. The pixels' principal colours, then each colour channel's 2-D DCT: PCA of the 32 x 32 low
   frequencies (d components), the variance of what they leave in every coordinate, then a
   K-component full-covariance Gaussian mixture on the whitened PCA coefficients by EM
   (k-means++ start, seeded).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceanon.backbones.face_prior import DIM, GRID, LOW, FacePrior, dct2, mirror
from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.faces.finder import Face, FaceFinder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NOISE_FLOOR = 0.01  # least residual variance of a coordinate (build_prior)


def list_images(data_dir: Path) -> list[tuple[Path, str]]:
    """(container, name) of every image: members of ``*.zip`` shards, else plain files."""
    shards = sorted(data_dir.glob("*.zip"))
    out: list[tuple[Path, str]] = []
    for shard in shards:
        try:
            with zipfile.ZipFile(shard) as z:
                names = sorted(z.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise FaceanonError(f"{shard}: not a readable zip shard ({exc})") from None
        out += [(shard, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if not shards:
        out = [
            (p, "")
            for p in sorted(data_dir.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ]
    return out


def read_images(
    items: list[tuple[Path, str]],
) -> Iterator[tuple[str, np.ndarray | None]]:
    from PIL import Image

    open_zip: tuple[Path, zipfile.ZipFile] | None = None
    for container, name in items:
        label = f"{container.name}/{name}" if name else str(container)
        try:
            if name:
                if open_zip is None or open_zip[0] != container:
                    open_zip = (container, zipfile.ZipFile(container))
                data = open_zip[1].read(name)
            else:
                data = container.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                image: np.ndarray | None = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, zipfile.BadZipFile, Image.DecompressionBombError):
            image = None  # unreadable: counted with the crops where no face was found
        yield label, image


def frame_crop(image: np.ndarray) -> np.ndarray:
    """A face crop as the detector needs it: enlarged 2x (bicubic) and framed on each side by
    its own size of reflected border."""
    import cv2

    h, w = image.shape[:2]
    up = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(up, h, h, w, w, cv2.BORDER_REFLECT_101)


def central_face(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    """The face whose box centre is nearest the image centre (a framed crop's own face, not
    one of its reflections); None if there is none."""
    cx, cy = shape[1] / 2, shape[0] / 2

    def distance(face: Face) -> float:
        x0, y0, x1, y1 = face.box
        return float(np.hypot((x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy))

    return min(faces, key=distance) if faces else None


def align_crop(finder: FaceFinder, image: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The crop's face as the pipeline sees it: (3, 64, 64) float32 latent in [-1, 1] and
    the padded fraction of its aligned crop; None if no face is found."""
    import cv2

    from faceanon.faces.align import warp_to_crop

    h, w = image.shape[:2]
    framed = frame_crop(image)
    face = central_face(finder.find(framed), framed.shape)
    if face is None:
        return None
    alignment = face.geometry.alignment
    crop = warp_to_crop(framed, alignment)
    inside = np.zeros(framed.shape[:2], np.float32)
    inside[h : h + 2 * h, w : w + 2 * w] = 1.0
    covered = cv2.warpAffine(
        inside, alignment.matrix, (alignment.size, alignment.size), flags=cv2.INTER_LINEAR
    )
    latent = crop.astype(np.float32).reshape(GRID, 4, GRID, 4, 3).mean(axis=(1, 3))
    return np.ascontiguousarray(latent.transpose(2, 0, 1) / 127.5 - 1.0), float(
        1.0 - covered.mean()
    )


@dataclass
class AlignedSet:
    names: list[str]
    latents: np.ndarray  # (N, 3, 64, 64) float32 of the kept crops
    padding: np.ndarray  # (M,) padded fraction of every crop with a face (kept or not)
    missed: list[str]  # crops where no face was found


def _align_part(items: list[tuple[Path, str]]) -> list[tuple[str, np.ndarray | None, float]]:
    from faceanon.faces.finder import FaceFinder

    finder = FaceFinder(sideways=False, recall="standard")
    out: list[tuple[str, np.ndarray | None, float]] = []
    for name, image in read_images(items):
        found = None if image is None or min(image.shape[:2]) < 16 else align_crop(finder, image)
        out.append((name, None, -1.0) if found is None else (name, found[0], found[1]))
    return out


def align_dataset(
    data_dir: Path, max_padding: float = 0.5, workers: int = 1, limit: int | None = None
) -> AlignedSet:
    """Align every crop of ``data_dir`` (the first ``limit`` in name order if given)."""
    items = list_images(data_dir)[:limit]
    if not items:
        raise FaceanonError(f"{data_dir}: no images (*.jpg, *.png, or zip shards of them)")
    chunk = 256
    parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = [r for part in pool.imap(_align_part, parts) for r in part]
    else:
        results = [r for part in parts for r in _align_part(part)]
    kept = [(n, z) for n, z, p in results if z is not None and p <= max_padding]
    with_face = [p for _, z, p in results if z is not None]
    return AlignedSet(
        names=[n for n, _ in kept],
        latents=np.stack([z for _, z in kept]).astype(np.float32)
        if kept
        else np.zeros((0, 3, GRID, GRID), np.float32),
        padding=np.array(with_face),
        missed=[n for n, z, _ in results if z is None],
    )


# ---------------------------------------------------------------------------------------------
# The model fit


def pca_low(
    x: np.ndarray, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the low frequencies of the data and its mirror image, in the model's coordinates.

    Returns the mean (D,), the colour matrix (3, 3), the components (d, |L|) as orthonormal
    rows, their variances (d,), and the residual variance of every coordinate (D,).
    """
    n = len(x)
    mean = 0.5 * (x.mean(axis=0) + mirror(x.mean(axis=0, keepdims=True))[0])
    colours = np.zeros((3, 3))
    for i in range(0, n, 2048):  # the pixels' colour covariance (mirroring does not change it)
        part = (x[i : i + 2048] - mean).reshape(-1, 3, GRID * GRID)
        colours += np.einsum("nip,njp->ij", part, part)
    colour = np.linalg.eigh(colours)[1][:, ::-1].T
    colour *= np.sign(colour[np.arange(3), np.abs(colour).argmax(axis=1)])[:, None]

    def blocks() -> Iterator[np.ndarray]:  # the whole set in DCT form would be 3 GB
        for i in range(0, n, 2048):
            part = x[i : i + 2048] - mean
            yield np.concatenate([dct2(part, colour), dct2(mirror(part), colour)])

    cov = np.zeros((len(LOW), len(LOW)))
    for coeffs in blocks():
        cov += coeffs[:, LOW].T @ coeffs[:, LOW]
    cov /= 2 * n
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(-values, kind="stable")[:d]
    basis = vectors[:, order].T
    # Each component's sign: its largest-magnitude entry positive (deterministic output).
    basis *= np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])[:, None]
    return mean, colour, basis, values[order], residual_variances(blocks(), basis, 2 * n)


def residual_variances(blocks: Iterable[np.ndarray], basis: np.ndarray, n: int) -> np.ndarray:
    """Mean square, per coordinate, of what the components leave."""
    noise = np.zeros(DIM)
    for coeffs in blocks:
        coeffs[:, LOW] -= (coeffs[:, LOW] @ basis.T) @ basis
        noise += (coeffs**2).sum(axis=0)
    return np.asarray(np.maximum(noise / n, 1e-10))


def _kmeans_pp(z: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    centres = [z[rng.integers(len(z))]]
    dist = ((z - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        centres.append(z[rng.choice(len(z), p=dist / dist.sum())])
        dist = np.minimum(dist, ((z - centres[-1]) ** 2).sum(axis=1))
    c = np.array(centres)
    labels = np.zeros(len(z), np.int64)
    for _ in range(iters):
        labels = ((c**2).sum(axis=1)[None] - 2.0 * z @ c.T).argmin(axis=1)
        for j in range(k):
            if (labels == j).any():
                c[j] = z[labels == j].mean(axis=0)
    return labels


def gmm_log_densities(
    z: np.ndarray, weights: np.ndarray, means: np.ndarray, chols: np.ndarray
) -> np.ndarray:
    """(N, K): log pi_k + log N(z; m_k, L_k L_k^T)."""
    n, d = z.shape
    out = np.empty((n, len(weights)))
    for j in range(len(weights)):
        u = np.linalg.solve(chols[j], (z - means[j]).T)
        logdet = 2.0 * np.log(np.diag(chols[j])).sum()
        out[:, j] = np.log(weights[j]) - 0.5 * ((u**2).sum(axis=0) + logdet + d * np.log(2 * np.pi))
    return out


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1, keepdims=True)
    return np.asarray((top + np.log(np.exp(a - top).sum(axis=1, keepdims=True)))[:, 0])


def fit_gmm(
    z: np.ndarray, k: int, seed: int, iters: int = 40, reg: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """EM for a full-covariance mixture; returns weights, means, Cholesky factors and the
    mean log-likelihood per iteration. ``reg`` is added to every covariance's diagonal."""
    rng = np.random.default_rng(seed)
    n, d = z.shape
    labels = _kmeans_pp(z, k, rng, iters=10)
    resp = np.zeros((n, k))
    resp[np.arange(n), labels] = 1.0
    history: list[float] = []
    for _ in range(iters + 1):
        counts = resp.sum(axis=0) + 1e-10
        weights = counts / n
        means = (resp.T @ z) / counts[:, None]
        chols = np.empty((k, d, d))
        for j in range(k):
            c = z - means[j]
            cov = (resp[:, j, None] * c).T @ c / counts[j] + reg * np.eye(d)
            chols[j] = np.linalg.cholesky(cov)
        logp = gmm_log_densities(z, weights, means, chols)
        total = _logsumexp(logp)
        history.append(float(total.mean()))
        resp = np.exp(logp - total[:, None])
    return weights, means, chols, history


@dataclass
class FitReport:
    crops: int
    missed: int
    padding: np.ndarray
    kept: int
    train: int
    heldout: int
    heldout_nats_per_dim: float
    gmm_history: list[float]

    def lines(self) -> list[str]:
        p10, p50, p90 = np.percentile(self.padding, [10, 50, 90]) if len(self.padding) else (0,) * 3
        return [
            f"{self.crops} crops: no face found in {self.missed}; padded fraction of the aligned"
            f" crop p10/p50/p90 {p10:.2f}/{p50:.2f}/{p90:.2f}",
            f"kept {self.kept} (padding within the limit): {self.train} to fit (x2 with mirror"
            f" images), {self.heldout} held out",
            f"held-out log-likelihood {self.heldout_nats_per_dim:.4f} nats per dimension",
        ]


def split(count: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    cut = round(count * heldout)
    return np.sort(order[cut:]), np.sort(order[:cut])


def build_prior(
    aligned: AlignedSet,
    d: int,
    k: int,
    seed: int = 0,
    iters: int = 40,
    heldout: float = 0.05,
    pca: FacePrior | None = None,
    noise_floor: float = NOISE_FLOOR,
) -> tuple[FacePrior, FitReport]:
    """Fit on the kept crops minus a seeded held-out share; report the held-out likelihood.
    ``pca``: a model (mixture or not) already fitted on the same split with >= d components,
    whose PCA is reused."""
    train, test = split(len(aligned.latents), heldout, seed)
    if len(train) < 2:
        raise FaceanonError(f"only {len(train)} usable crops: too few to fit a face model")
    x = aligned.latents[train].reshape(len(train), -1).astype(np.float64)
    if pca is None or pca.components < d:
        prior = FacePrior.from_parts(*pca_low(x, d))
    else:  # the top d of a larger PCA of the same data are its PCA with d components
        basis = pca.basis[:d]
        coords = (
            np.concatenate([pca.coordinates(b), pca.coordinates(mirror(b))])
            for b in (x[i : i + 2048] - pca.mean for i in range(0, len(x), 2048))
        )
        noise = residual_variances(coords, basis, 2 * len(x))
        prior = FacePrior.from_parts(pca.mean, pca.colour, basis, pca.variances[:d], noise)
    # The floor keeps the ODE well conditioned: coordinates with almost no variance make
    # inversion amplify every rounding (restore RMSE 0.031 / 0.026 / 0.017 at floors 1e-3 /
    # 3e-3 / 1e-2 on held-out crops, T = 50, fixed-point:4); it adds a fine grain to the faces.
    prior = replace(prior, noise=np.maximum(prior.noise, noise_floor))
    mean, variances = prior.mean, prior.variances
    blocks = [x[i : i + 2048] - mean for i in range(0, len(x), 2048)]
    coeffs = np.concatenate(
        [prior.project(b) for b in blocks] + [prior.project(mirror(b)) for b in blocks]
    ) / np.sqrt(variances)  # whitened, the crops then their mirror images
    del x, blocks
    weights, means, chols, history = fit_gmm(coeffs, k, seed, iters)
    prior = prior.with_mixture(weights, means, chols)
    ll = float(prior.log_likelihood(aligned.latents[test]).mean()) / DIM if len(test) else np.nan
    report = FitReport(
        len(aligned.padding) + len(aligned.missed),
        len(aligned.missed),
        aligned.padding,
        len(aligned.latents),
        len(train),
        len(test),
        ll,
        history,
    )
    return prior, report


def recipe(args: object, report: FitReport) -> str:
    """The text stored in the model file: what it is, how it was made, its licence."""
    a = vars(args)
    return "\n".join(
        [
            "faceanon face-prior model (faceanon/backbones/face_prior.py)",
            f"rebuild: faceanon fit-prior DATA_DIR -o FILE --components {a['components']}"
            f" --mixture {a['mixture']} --iterations {a['iterations']} --seed {a['seed']}"
            f" --heldout {a['heldout']} --max-padding {a['max_padding']}"
            f" --noise-floor {a['noise_floor']}"
            + (f" --limit {a['limit']}" if a.get("limit") else ""),
            *report.lines(),
            "licence: derived from the training crops; for faces64 (UTKFace and CelebA):"
            " non-commercial research use only",
        ]
    )
