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
- key reuse (METHOD §8): from one known (original, anonymized) pair the attacker estimates the
  sign vector r = sign(z_T(anonymized) / z_T(original)) inside the mask and applies it to the
  other images; it works in paper mode (one r per key) and must fail with per-image nonces.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.eval import metrics
from faceanon.eval.recognizers import FaceLocator, LocatedFace, Recognizer
from faceanon.media.io import read_image, write_atomic

if TYPE_CHECKING:
    import torch

    from faceanon.anonymizer import Anonymizer
    from faceanon.faces.finder import Face, FaceFinder
    from faceanon.secure.keys import SecretKey

CLEAN = "clean"
FARS = (0.001, 0.01)


class EvaluationError(FaceanonError):
    """A pairs file or image folder the evaluation cannot use."""


@dataclass(frozen=True)
class Pair:
    a: str  # template image, relative to the image folder
    b: str  # probe image: the one anonymized
    same: bool
    fold: int


def load_pairs(path: Path) -> list[Pair]:
    """LFW's ``pairs.txt`` (header "folds n", then n matched and n mismatched lines per fold) or
    a TSV with a header ``image_a image_b same`` (folds: position modulo 10)."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path}: cannot read pairs file ({error})") from error
    if not lines:
        raise EvaluationError(f"{path}: empty pairs file")
    pairs: list[Pair] = []
    lfw = len(lines[0]) == 2 and all(v.isdigit() for v in lines[0])
    if not lfw and lines[0] != ["image_a", "image_b", "same"]:
        raise EvaluationError(f"{path}: not LFW pairs.txt, and no 'image_a image_b same' header")
    for number, fields in enumerate(lines[1:], start=2):
        index = len(pairs)
        try:
            if lfw:
                per_fold = 2 * int(lines[0][1])
                if len(fields) == 3:
                    name, i, j = fields
                    pair = (f"{name}/{name}_{int(i):04d}.jpg", f"{name}/{name}_{int(j):04d}.jpg", 1)
                elif len(fields) == 4:
                    n1, i, n2, j = fields
                    pair = (f"{n1}/{n1}_{int(i):04d}.jpg", f"{n2}/{n2}_{int(j):04d}.jpg", 0)
                else:
                    raise ValueError
                pairs.append(Pair(pair[0], pair[1], bool(pair[2]), index // per_fold))
            else:
                a, b, same = fields
                if same not in ("0", "1"):
                    raise ValueError
                pairs.append(Pair(a, b, same == "1", index % 10))
        except ValueError:
            raise EvaluationError(
                f"{path}: line {number} is not a pair: {' '.join(fields)}"
            ) from None
    if not any(p.same for p in pairs) or all(p.same for p in pairs):
        raise EvaluationError(f"{path}: needs both same-identity and different-identity pairs")
    return pairs


def sample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """``limit`` of ``items`` drawn under ``seed``, in their order (all if ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(keep)]


def _read(images: Path, name: str) -> np.ndarray:
    return read_image(images / name).image


@dataclass
class Original:
    face: LocatedFace | None
    points: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: dict[str, np.ndarray] = field(default_factory=dict)


class Originals:
    """Located faces, alignment points and embeddings of the original images, cached on disk
    (one file per image folder, locator and recognizer versions) so re-runs are cheap."""

    def __init__(
        self,
        images: Path,
        locator: FaceLocator,
        recognizers: Sequence[Recognizer],
        cache_dir: Path | None,
    ) -> None:
        self.images, self.locator, self.recognizers = images, locator, recognizers
        config = json.dumps(
            [str(images.resolve()), locator.version, [r.version for r in recognizers]]
        )
        digest = hashlib.sha256(config.encode()).hexdigest()[:16]
        self.path = None if cache_dir is None else cache_dir / f"originals-{digest}.npz"
        self.items: dict[str, Original] = {}
        self.loaded = 0
        if self.path is not None and self.path.is_file():
            try:
                self._load(self.path)
            except (OSError, ValueError, KeyError):  # damaged: recompute, then overwrite
                self.items = {}

    def _load(self, path: Path) -> None:
        with np.load(path) as npz:
            data = {key: npz[key] for key in npz.files}  # each npz[key] reads the whole array
            for i, name in enumerate(data["names"].tolist()):
                face = None
                if data["found"][i]:
                    box = tuple(float(v) for v in data["box"][i])
                    five = data["five"][i].reshape(5, 2)
                    face = LocatedFace(box, five, float(data["score"][i]))  # type: ignore[arg-type]
                item = Original(face)
                if face is not None:
                    for r in self.recognizers:
                        item.points[r.name] = data[f"points_{r.name}"][i]
                        item.embedding[r.name] = data[f"embedding_{r.name}"][i]
                self.items[name] = item
        self.loaded = len(self.items)

    def save(self) -> None:
        found = [(n, i) for n, i in self.items.items() if i.face is not None]
        if self.path is None or not found:
            return
        names = list(self.items)
        faces = [self.items[n].face for n in names]
        arrays: dict[str, np.ndarray] = {
            "names": np.array(names),
            "found": np.array([f is not None for f in faces]),
            "box": np.array([f.box if f else (0.0,) * 4 for f in faces]),
            "five": np.array([f.five.ravel() if f else np.zeros(10) for f in faces]),
            "score": np.array([f.score if f else 0.0 for f in faces]),
        }
        for r in self.recognizers:
            for kind in ("points", "embedding"):
                blank = np.zeros_like(getattr(found[0][1], kind)[r.name])
                arrays[f"{kind}_{r.name}"] = np.array(
                    [getattr(self.items[n], kind).get(r.name, blank) for n in names]
                )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        write_atomic(self.path, buffer.getvalue())

    def get(self, name: str) -> Original:
        if name not in self.items:
            image = _read(self.images, name)
            face = self.locator(image)
            item = Original(face)
            if face is not None:
                for r in self.recognizers:
                    item.points[r.name] = r.points(image, face)
                    item.embedding[r.name] = r.embed(image, item.points[r.name])
            self.items[name] = item
        return self.items[name]


class Method(Protocol):
    """Turns a photo and its faces into named conditions (processed copies of the photo)."""

    label: str

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]: ...


def paste(
    photo: np.ndarray,
    faces: Sequence[Face],
    transform: Any,
    nonces: Sequence[Any],
    grid: tuple[int, int],
    sealed: bool = False,
) -> np.ndarray:
    """``photo`` with each face cut out, transformed and pasted back over the region
    ``faceanon anonymize`` replaces (``sealed``: keyflip's, as its metadata carries it)."""
    return paste_many([photo], [faces], transform, [nonces], grid, sealed)[0]


def paste_many(
    photos: Sequence[np.ndarray],
    faces: Sequence[Sequence[Face]],
    transform: Any,
    nonces: Sequence[Sequence[Any]],
    grid: tuple[int, int],
    sealed: bool = False,
) -> list[np.ndarray]:
    """:func:`paste` for several photos, their faces' crops in one call of ``transform``."""
    from faceanon.faces.finder import transform_photos
    from faceanon.media.photos import output_geometry

    geometry = [output_geometry(photo_faces, sealed) for photo_faces in faces]
    return transform_photos(photos, geometry, [list(n) for n in nonces], transform, grid)


@dataclass
class ClassicMethod:
    label: str
    apply: Callable[[Sequence[np.ndarray]], list[np.ndarray]]
    grid: tuple[int, int] = (256, 256)

    @property
    def published(self) -> str:
        return self.label

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        return {self.label: self.publish([photo], [faces], 0)[0]}

    def publish(
        self, photos: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], seed: int
    ) -> list[np.ndarray]:
        """What an attacker gets by running the method on photos of their own (the
        reconstruction attack's training inputs)."""
        from faceanon.faces.finder import classic

        nonces = [[None] * len(f) for f in faces]
        return paste_many(photos, faces, classic(self.apply), nonces, self.grid)


@dataclass
class HydroMethod:
    """``--method hydro``: irreversible; nothing to restore, so one condition. Its randomness
    comes from the run's seed and the image name, so a run can be repeated exactly."""

    anonymizer: Anonymizer
    strength: float
    seed: int
    batch_size: int = 8

    @property
    def label(self) -> str:
        return f"hydro {self.strength:g}"

    published = label

    @property
    def grid(self) -> tuple[int, int]:
        _, h, w = self.anonymizer.backbone.latent_shape
        return (h, w)

    def _transform(self, seed: int) -> Any:
        from faceanon.faces.finder import hydro

        return hydro(self.anonymizer, self.strength, 1, self.batch_size, seed=seed)

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        digest = hashlib.sha256(f"{self.seed}\0{name}\0hydro".encode()).digest()
        return {self.label: self.publish([photo], [faces], int.from_bytes(digest[:7], "big"))[0]}

    def publish(
        self, photos: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], seed: int
    ) -> list[np.ndarray]:
        nonces = [[None] * len(f) for f in faces]
        return paste_many(photos, faces, self._transform(seed), nonces, self.grid)


def image_nonces(seed: int, name: str, count: int) -> list[bytes | None]:
    """Per-face nonces derived from the run's seed and the image name: re-runs are identical,
    and every image and face still gets its own nonce, as ``faceanon anonymize`` gives."""
    return [hashlib.sha256(f"{seed}\0{name}\0{i}".encode()).digest()[:16] for i in range(count)]


class KeyflipMethod:
    """Anonymize with the key; de-anonymize with it, with the key one bit off and with a random
    key. The wrong keys get the true geometry and nonces: the attacker's best case."""

    label = "keyflip"

    def __init__(self, anonymizer: Anonymizer, key: SecretKey, seed: int, batch_size: int = 8):
        from faceanon.secure.keys import SecretKey

        rng = np.random.default_rng(seed)
        self.anonymizer, self.key, self.seed, self.batch_size = anonymizer, key, seed, batch_size
        self.wrong = {
            "wrong key (1 bit)": key.with_bit_flipped(int(rng.integers(key.bits))),
            "random key": SecretKey(rng.bytes(len(key.material))),
        }
        _, h, w = anonymizer.backbone.latent_shape
        self.grid = (h, w)

    def nonces(self, name: str, count: int) -> list[bytes | None]:
        if self.anonymizer.paper_mode:
            return [None] * count
        return image_nonces(self.seed, name, count)

    def transform(self, key: SecretKey, undo: bool = False) -> Any:
        from faceanon.faces.finder import keyflip

        return keyflip(self.anonymizer, key, self.batch_size, undo=undo)

    published = "keyflip: anonymized"

    def publish(
        self, photos: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], seed: int
    ) -> list[np.ndarray]:
        """The attacker's training inputs: keyflip with keys and nonces of their own (one
        random key per call, a random nonce per face), never the evaluation's key."""
        from faceanon.secure.keys import SecretKey

        rng = np.random.default_rng(seed)
        key = SecretKey(rng.bytes(len(self.key.material)))
        nonces = [[None if self.anonymizer.paper_mode else rng.bytes(16) for _ in f] for f in faces]
        return paste_many(photos, faces, self.transform(key), nonces, self.grid, sealed=True)

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        """With no face found the photo comes back unchanged (as ``--write-faceless`` writes
        it): the worst case, counted in the report."""
        nonces = self.nonces(name, len(faces))
        grid = self.grid
        anonymized = paste(photo, faces, self.transform(self.key), nonces, grid, sealed=True)
        out = {"keyflip: anonymized": anonymized}
        undo = self.transform(self.key, undo=True)
        out["keyflip: de-anonymized"] = paste(anonymized, faces, undo, nonces, grid, sealed=True)
        for label, key in self.wrong.items():
            undo = self.transform(key, undo=True)
            out[f"keyflip: {label}"] = paste(anonymized, faces, undo, nonces, grid, sealed=True)
        return out


def inverted_noise(anonymizer: Anonymizer, crops: Sequence[np.ndarray]) -> torch.Tensor:
    """z_T of each crop by the method's own inversion (public model)."""
    import torch

    from faceanon.anonymizer import to_tensor
    from faceanon.diffusion.loops import invert

    backbone = anonymizer.backbone
    with torch.inference_mode():
        z0 = backbone.encode(to_tensor(crops, backbone.image_size))
        levels = backbone.schedule.levels(anonymizer.steps)
        return invert(backbone.eps, z0, levels, refine=anonymizer.refine)[-1]


class KeyReuseAttack:
    """METHOD §8: the first image with a face is the attacker's known pair; for every later
    image the attacker's estimate of r is applied to its anonymized face, in paper mode and with
    per-image nonces. ``agreement`` records how much of the true r inside each mask it got
    (flip only: the ``mix`` transform has no sign vector to estimate, the attack still applies
    its estimate as a sign flip, the paper's attacker's move)."""

    label = "attack"

    def __init__(self, paper: KeyflipMethod, nonced: KeyflipMethod) -> None:
        if not paper.anonymizer.paper_mode or nonced.anonymizer.paper_mode:
            raise ValueError("the attack compares a paper-mode and a nonce-mode anonymizer")
        self.modes = {"paper mode": paper, "nonces": nonced}
        self.estimate: dict[str, torch.Tensor] = {}
        self.known: str | None = None
        self.agreement: dict[str, list[float]] = {mode: [] for mode in self.modes}

    def _crops(self, photo: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray]:
        from faceanon.faces.align import warp_to_crop

        return [warp_to_crop(photo, f.geometry.alignment) for f in faces]

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        import torch

        if not faces:
            return {}
        out = {}
        for mode, method in self.modes.items():
            anon = method.anonymizer
            _, h, w = anon.backbone.latent_shape
            nonces = method.nonces(name, len(faces))
            anonymized = paste(
                photo, faces, method.transform(method.key), nonces, method.grid, sealed=True
            )
            if mode not in self.estimate:  # the known pair: estimate r inside the mask
                z, z_anon = inverted_noise(
                    anon, self._crops(photo, faces[:1]) + self._crops(anonymized, faces[:1])
                )
                inside = torch.from_numpy(faces[0].geometry.mask.grid(h, w))
                self.estimate[mode] = torch.where(inside & (z * z_anon < 0), -1.0, 1.0)[None]
                self.known = name
                continue
            signs = self.estimate[mode].expand(len(faces), -1, -1, -1)
            if anon.transform == "flip":  # the estimate's target exists only for the flip
                true = anon.signs(method.key, nonces)
                for f, s in zip(faces, true, strict=True):
                    inside = torch.from_numpy(f.geometry.mask.grid(h, w)).expand_as(s)
                    agree = float((s[inside] == signs[0][inside]).float().mean())
                    self.agreement[mode].append(agree)

            def attack(
                crops: list[np.ndarray],
                masks: list[Any],
                _: list[Any],
                anon: Anonymizer = anon,
                signs: torch.Tensor = signs,
            ) -> list[np.ndarray]:
                return anon.with_change(crops, signs, masks)

            out[f"attack: {mode}"] = paste(
                anonymized, faces, attack, nonces, method.grid, sealed=True
            )
        return out


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
    photo = _read(images, name)
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


def load_identities(path: Path) -> dict[str, str]:
    """A TSV with a header ``image identity`` (celeba-wild's ``identities.tsv``)."""
    try:
        lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path}: cannot read identities file ({error})") from error
    if not lines or [f.strip() for f in lines[0]] != ["image", "identity"]:
        raise EvaluationError(f"{path}: no 'image identity' header")
    out: dict[str, str] = {}
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) != 2:
            raise EvaluationError(f"{path}: line {number} is not 'image<TAB>identity'")
        out[fields[0].strip()] = fields[1].strip()
    return out


def lfw_identities(pairs: Sequence[Pair]) -> dict[str, str]:
    """LFW names its images ``Person/Person_0001.jpg``: the folder is the identity."""
    return {n: n.split("/")[0] for p in pairs for n in (p.a, p.b) if "/" in n}


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
