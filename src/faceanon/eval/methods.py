"""What the evaluation compares: each *method* turns a photo and its faces into named
*conditions* (``blur 0.04``; ``keyflip: anonymized``, ``keyflip: de-anonymized``, wrong keys;
HYDRO; the key-reuse attack of METHOD §8), every face processed as ``faceanon anonymize``
processes it and pasted back through the same sealed-then-opened region as real outputs.

Key reuse: from one known (original, anonymized) pair the attacker estimates the sign vector
r = sign(z_T(anonymized) / z_T(original)) inside the mask and applies it to the other images;
it works in paper mode (one r per key) and must fail with per-image nonces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from faceanon.anonymizer import Anonymizer
    from faceanon.faces.finder import Face
    from faceanon.secure.keys import SecretKey


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
    from faceanon.faces.replace import transform_photos
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
        from faceanon.faces.replace import classic

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
        from faceanon.faces.replace import hydro

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
    published = "keyflip: anonymized"

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

    def transform(
        self, key: SecretKey, undo: bool = False, plain: list[np.ndarray] | None = None
    ) -> Any:
        from faceanon.faces.replace import keyflip

        return keyflip(self.anonymizer, key, self.batch_size, undo=undo, plain=plain)

    def _faces(self, key: SecretKey, plain: list[np.ndarray]) -> Any:
        """The crop transform that makes the published faces with ``key``, appending the faces
        the restore starts from to ``plain`` where they differ (the display)."""
        return self.transform(key, plain=plain)

    def _shown(
        self,
        photos: Sequence[np.ndarray],
        faces: Sequence[Sequence[Face]],
        key: SecretKey,
        nonces: Sequence[Sequence[bytes | None]],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The photos as published and with the faces the file carries exactly, which the
        restore starts from (the data's quantisation to one 8-bit level left out); the same
        photos twice where they do not differ."""
        plain: list[np.ndarray] = []
        shown = paste_many(photos, faces, self._faces(key, plain), nonces, self.grid, sealed=True)
        if not plain:
            return shown, shown
        exact = paste_many(
            photos, faces, lambda c, *_: plain[: len(c)], nonces, self.grid, sealed=True
        )
        return shown, exact

    def publish(
        self, photos: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], seed: int
    ) -> list[np.ndarray]:
        """The attacker's training inputs: the method's published photos with keys and nonces
        of their own (one random key per call, a random nonce per face), never the
        evaluation's key."""
        from faceanon.secure.keys import SecretKey

        rng = np.random.default_rng(seed)
        key = SecretKey(rng.bytes(len(self.key.material)))
        nonces = [[None if self.anonymizer.paper_mode else rng.bytes(16) for _ in f] for f in faces]
        return self._shown(photos, faces, key, nonces)[0]

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        """With no face found the photo comes back unchanged (as ``--write-faceless`` writes
        it): the worst case, counted in the report. Published: the photo as shown; restored
        from the exact faces (:meth:`_shown`)."""
        nonces = self.nonces(name, len(faces))
        [shown], [exact] = self._shown([photo], [faces], self.key, [nonces])
        return self.restores(shown, exact, faces, nonces)

    def restores(
        self,
        published: np.ndarray,
        restorable: np.ndarray,
        faces: list[Face],
        nonces: list[bytes | None],
    ) -> dict[str, np.ndarray]:
        """The ``published`` photo, and ``restorable`` (what the restore starts from) restored
        with the key, the key one bit off and a random key."""
        out = {f"{self.label}: anonymized": published}
        for label, key in {"de-anonymized": self.key, **self.wrong}.items():
            undo = self.transform(key, undo=True)
            restored = paste(restorable, faces, undo, nonces, self.grid, sealed=True)
            out[f"{self.label}: {label}"] = restored
        return out


class HideMethod(KeyflipMethod):
    """``--method hide``: the protected photo (guided by ``guide`` at ``scale``) is published;
    the restores start from the unguided faces, as the file's exact face data gives them (here
    the unguided photo itself, as a PNG keyflip output would be: the data's quantisation to one
    8-bit level is left out)."""

    label = "hide"

    def __init__(
        self,
        anonymizer: Anonymizer,
        key: SecretKey,
        seed: int,
        batch_size: int = 8,
        guide: str = "sface",
        scale: float | None = None,
    ) -> None:
        super().__init__(anonymizer, key, seed, batch_size)
        self.guide, self.scale = guide, scale
        self.label = "hide" if scale is None else f"hide {scale:g}"
        self.published = f"{self.label}: anonymized"

    def _faces(self, key: SecretKey, plain: list[np.ndarray]) -> Any:
        """The protected faces; the unguided ones appended to ``plain``."""
        from faceanon.faces.replace import hide

        return hide(self.anonymizer, key, self.guide, self.scale, self.batch_size, None, plain)


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
                public = anon.unshifted(
                    self._crops(anonymized, faces[:1]), [faces[0].geometry.mask]
                )
                z, z_anon = inverted_noise(anon, self._crops(photo, faces[:1]) + public)
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
                __: list[Any],
                anon: Anonymizer = anon,
                signs: torch.Tensor = signs,
            ) -> list[np.ndarray]:
                return anon.with_change(crops, signs, masks, undo=True)

            out[f"attack: {mode}"] = paste(
                anonymized, faces, attack, nonces, method.grid, sealed=True
            )
        return out
