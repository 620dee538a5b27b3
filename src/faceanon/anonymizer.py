"""The public API for aligned face crops: anonymize with a key, and undo with the same key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from faceanon.backbones.base import Backbone
from faceanon.diffusion.ddim_settings import ddim_defaults, inversion_name, parse_inversion
from faceanon.errors import ImageError
from faceanon.faces.masks import EllipseMask, Mask
from faceanon.limits import MAX_STEPS
from faceanon.methods.colour import checked_share, shift, unshift
from faceanon.methods.display import checked_level, denoised
from faceanon.methods.keyflip import Change, Progress, keyflip_latent
from faceanon.secure.keys import SecretKey, new_nonce, sign_vector
from faceanon.secure.transforms import DEFAULT_TRANSFORM, TRANSFORMS


@dataclass(frozen=True)
class AnonymizedFace:
    """An anonymized crop and everything needed to undo it, except the key."""

    image: np.ndarray  # (S, S, 3) uint8
    nonce: bytes | None  # None: paper mode (the same sign vector for every image)
    mask: Mask
    backbone: str
    revision: str | None
    steps: int
    inversion: str
    transform: str = "flip"
    colour: float | None = None  # the public tone shift's share (faceanon.methods.colour)


def to_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise TypeError("expected a list of images; wrap a single image in a list")
    for image in images:
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"expected numpy uint8 arrays (np.asarray(pil_image)), got {type(image).__name__}"
            )
        if image.dtype != np.uint8 or image.shape != (size, size, 3):
            raise ImageError(
                f"expected a {size}x{size} RGB uint8 crop, got shape {image.shape} {image.dtype}"
            )
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    out = ((images.detach().cpu().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return list(out.permute(0, 2, 3, 1).numpy())


def _check(
    images: Sequence[np.ndarray],
    key: SecretKey,
    masks: Sequence[Mask],
    nonces: Sequence[bytes | None],
) -> None:
    """The keyed map's arguments: a faceanon key, one mask and nonce per crop."""
    if not isinstance(key, SecretKey):
        raise TypeError(
            f"key must be a faceanon SecretKey (SecretKey.from_text, read_key_file), "
            f"got {type(key).__name__}"
        )
    if len(nonces) != len(images) or len(masks) != len(images):
        raise ValueError("images, masks and nonces must have the same length")


class Anonymizer:
    """Key-conditioned reversible anonymization of aligned crops (METHOD §5-6).

    ``paper_mode=True`` reproduces the paper: one sign vector per key for every image. It is
    vulnerable to a known-pair attack (METHOD §8); the default draws a random nonce per image.
    ``inversion``: ``ddim`` or ``fixed-point[:K]`` (see :func:`faceanon.diffusion.loops.invert`).
    ``steps`` and ``inversion`` default to the backbone's
    (:func:`faceanon.diffusion.ddim_settings.ddim_defaults`).
    ``colour``: the share of the public tone shift toward the kept skin
    (:mod:`faceanon.methods.colour`), None for none; ``"default"``:
    :data:`~faceanon.methods.colour.DEFAULT_ALPHA` for a backbone whose latent is colour in
    pixels (the embedded models), none for the others and in paper mode.
    ``display``: the noise level at which photos show the embedded models' faces denoised
    (:mod:`faceanon.methods.display`; the restore starts from the exact faces), None for the
    faces as they are; ``"default"``: :data:`~faceanon.methods.display.DEFAULT_LEVEL` where
    ``colour``'s default is on.
    """

    def __init__(
        self,
        backbone: Backbone,
        steps: int | None = None,
        paper_mode: bool = False,
        inversion: str | None = None,
        transform: str = DEFAULT_TRANSFORM,
        colour: float | str | None = "default",
        display: float | str | None = "default",
    ) -> None:
        default_steps, default_inversion = ddim_defaults(backbone.name)
        steps = default_steps if steps is None else steps
        inversion = default_inversion if inversion is None else inversion
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
        self.transform = transform
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
            raise TypeError(f"steps must be a whole number, got {type(steps).__name__} {steps!r}")
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be from 1 to {MAX_STEPS}, got {steps}")
        steps = int(steps)
        backbone.schedule.subsequence(steps)  # validates steps against the schedule
        self.backbone, self.steps, self.paper_mode = backbone, steps, paper_mode
        self.refine = parse_inversion(inversion)
        self.colour = checked_share(backbone, paper_mode, colour)
        self.display = checked_level(backbone, paper_mode, display)

    @property
    def inversion(self) -> str:
        """The canonical name of the inversion (``ddim`` or ``fixed-point:K``)."""
        return inversion_name(self.refine)

    def apply(
        self,
        images: Sequence[np.ndarray],
        key: SecretKey,
        masks: Sequence[Mask],
        nonces: Sequence[bytes | None],
        progress: Progress | None = None,
        undo: bool = False,
        residuals: Sequence[np.ndarray | None] | None = None,
        shown: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The keyed map on a batch of crops; ``undo`` for its inverse (deanonymize). With the
        ``flip`` transform both directions are the same map. ``residuals``: a lossy file's
        exact face data (:mod:`faceanon.media.latents`) for the crops that have it.
        ``shown``: where this anonymizer has a ``display``, the crops as a photo shows them are
        appended to it (:meth:`with_change`)."""
        _check(images, key, masks, nonces)
        change = self.change(key, nonces, masks, undo)
        return self.with_change(images, change, masks, progress, residuals, undo, shown)

    def change(
        self, key: SecretKey, nonces: Sequence[bytes | None], masks: Sequence[Mask], undo: bool
    ) -> torch.Tensor | Change:
        """What the key does to z_T for these faces: the flip's sign vectors or the mixing."""
        if self.transform == "flip":
            return self.signs(key, nonces)
        return self.mixing(key, nonces, masks, undo)

    def mixing(
        self, key: SecretKey, nonces: Sequence[bytes | None], masks: Sequence[Mask], undo: bool
    ) -> Change:
        """The ``mix`` transform of z_T (or its inverse) for these faces."""
        from faceanon.secure.transforms import mixing_plan

        c, h, w = self.backbone.latent_shape
        grids = [torch.from_numpy(m.grid(h, w)) for m in masks]
        plans = [
            mixing_plan(key, n, 0, c * int(g.sum())) if g.any() else None
            for n, g in zip(nonces, grids, strict=True)
        ]

        def change(z: torch.Tensor) -> torch.Tensor:
            out = z.clone()
            for i, (grid, plan) in enumerate(zip(grids, plans, strict=True)):
                if plan is None:
                    continue
                cells = grid.to(z.device)
                inside = z[i][:, cells]  # (c, cells)
                mixed = plan.apply(inside.double().cpu().numpy().ravel(), inverse=undo)
                values = torch.from_numpy(mixed).to(device=z.device, dtype=z.dtype)
                out[i][:, cells] = values.reshape(inside.shape)
            return out

        return change

    def signs(self, key: SecretKey, nonces: Sequence[bytes | None]) -> torch.Tensor:
        """The sign vectors r, (B, c, h, w) in {-1, +1}, for a key and each nonce."""
        shape = self.backbone.latent_shape
        return torch.from_numpy(np.stack([sign_vector(key, shape, n) for n in nonces]))

    def with_change(
        self,
        images: Sequence[np.ndarray],
        change: torch.Tensor | Change,
        masks: Sequence[Mask],
        progress: Progress | None = None,
        residuals: Sequence[np.ndarray | None] | None = None,
        undo: bool = False,
        shown: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The map with a given change of z_T inside the mask: sign vectors (``flip``'s, or the
        evaluation's attack's own) or a callable (``mix``'s). ``residuals``: as :meth:`apply`.
        ``undo``: the crops are anonymized ones: their tone shift is undone first, and none is
        added (an attacker's guess of the key does the same). Returns the exact crops (what the
        key undoes); ``shown`` (not with ``undo``), if this anonymizer has a ``display``, gets
        the same faces denoised, as photos show them (:mod:`faceanon.methods.display`)."""
        if len(images) != len(masks) or (not callable(change) and len(change) != len(images)):
            raise ValueError("images, masks and sign vectors must have the same length")
        x, grids, hint = self._inputs(images, masks)
        with torch.no_grad():
            z0 = self.backbone.encode(x)
        if residuals is not None and any(r is not None for r in residuals):
            from faceanon.media.latents import restored

            for i, residual in enumerate(residuals):
                if residual is not None:
                    exact = restored(z0[i].detach().cpu().numpy(), residual)
                    z0[i] = torch.from_numpy(exact).to(z0)
        if undo:
            z0 = self._tone(z0, grids, undo=True)
        z = keyflip_latent(
            self.backbone, z0, change, grids, self.steps, progress, self.refine, hint
        )
        if undo:
            return to_uint8(self.backbone.decode(z))
        if shown is not None and self.display is not None:
            clean = denoised(self.backbone, z, grids, self.display)
            shown.extend(to_uint8(self.backbone.decode(self._tone(clean, grids))))
        return to_uint8(self.backbone.decode(self._tone(z, grids)))

    def _tone(self, z: torch.Tensor, grids: torch.Tensor, undo: bool = False) -> torch.Tensor:
        """The faces in ``z`` moved toward the kept skin, or (``undo``) moved back, if this
        anonymizer does it (:mod:`faceanon.methods.colour`)."""
        if self.colour is None:
            return z
        return (unshift if undo else shift)(z, grids.to(z.device), self.colour)

    def unshifted(self, images: Sequence[np.ndarray], masks: Sequence[Mask]) -> list[np.ndarray]:
        """Anonymized crops with the public tone shift undone: what anyone can compute, so the
        evaluation's attackers start from it."""
        x, grids, _ = self._inputs(images, masks)
        with torch.no_grad():
            z = self._tone(self.backbone.encode(x), grids, undo=True)
            return to_uint8(self.backbone.decode(z))

    def _inputs(
        self, images: Sequence[np.ndarray], masks: Sequence[Mask]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The crops as a tensor, their masks on the latent grid, and a ControlNet's hints."""
        _, h, w = self.backbone.latent_shape
        grids = torch.from_numpy(np.stack([m.grid(h, w)[None] for m in masks]))
        x = to_tensor(images, self.backbone.image_size)
        hints = getattr(self.backbone, "hints", None)  # a ControlNet's hint of each crop
        hint = None if hints is None else torch.from_numpy(hints(images, masks))
        return x, grids, hint

    def hide(
        self,
        images: Sequence[np.ndarray],
        key: SecretKey,
        masks: Sequence[Mask],
        nonces: Sequence[bytes | None],
        guide: str = "sface",
        scale: float | None = None,
        progress: Progress | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``--method hide`` (:mod:`faceanon.methods.hide`): the keyed map's faces, and the same
        faces sampled with ``guide``'s identity guidance toward each original at ``scale``
        (None: the default): (plain, guided), without the tone shift. The key undoes the plain
        faces (with ``colour=None``)."""
        from faceanon.faces.torch_recognizers import crop_recognizer, five_points
        from faceanon.methods.hide import DEFAULT_SCALE, IdentityGuide
        from faceanon.methods.keyflip import guided_pair

        _check(images, key, masks, nonces)
        recognizer = crop_recognizer(guide)
        change = self.change(key, nonces, masks, False)
        x, grids, hint = self._inputs(images, masks)
        points = five_points(list(images))  # aligned as a service would: by the face's points
        with torch.no_grad():
            targets = recognizer(x, points)
        chosen = DEFAULT_SCALE if scale is None else scale
        wrap = IdentityGuide(self.backbone, recognizer, targets, grids, chosen, points)
        z0 = self.backbone.encode(x)
        plain, guided = guided_pair(
            self.backbone, z0, change, grids, self.steps, wrap, progress, self.refine, hint
        )
        # No tone shift: it would move what the guided recognizer sees (on the example face its
        # cosine to the original fell from 0.48 to 0.36), and the restore starts from plain.
        return to_uint8(self.backbone.decode(plain)), to_uint8(self.backbone.decode(guided))

    def latents(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The backbone's latent of each crop, as :meth:`apply` computes it."""
        with torch.no_grad():
            z = self.backbone.encode(to_tensor(crops, self.backbone.image_size))
        return [np.asarray(v.detach().cpu().numpy(), np.float64) for v in z]

    def deidentify(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[Mask],
        strength: float = 0.6,
        repeats: int = 1,
        progress: Progress | None = None,
        seed: int | None = None,
    ) -> list[np.ndarray]:
        """Irreversible anonymization (``--method hydro``, after HYDRO): the keyed map with a
        throw-away random key and nonces, then ``repeats`` times :func:`renoise_latent` at
        ``strength``. Neither key nor noise is kept: there is nothing to restore with. With a
        ``display`` and a tone shift (the embedded models), the faces are shown denoised and
        moved toward the kept skin, as keyflip's are.
        ``seed``: only for tests (default: fresh randomness from the operating system)."""
        import secrets

        from faceanon.methods.keyflip import keyflip_latent, renoise_latent

        if isinstance(repeats, bool) or not 1 <= repeats <= 10:
            raise ValueError(f"repeats must be from 1 to 10, got {repeats}")
        rng = np.random.default_rng(seed)
        key = SecretKey(rng.bytes(16)) if seed is not None else SecretKey.generate()
        nonces: list[bytes | None] = [rng.bytes(16) for _ in images]
        change = self.change(key, nonces, masks, False)
        x, grids, hint = self._inputs(images, masks)
        generator = torch.Generator().manual_seed(
            int(rng.integers(2**62)) if seed is not None else secrets.randbits(62)
        )
        z = self.backbone.encode(x)
        z = keyflip_latent(self.backbone, z, change, grids, self.steps, progress, self.refine, hint)
        for _ in range(repeats):
            z = renoise_latent(self.backbone, z, grids, self.steps, strength, generator, None, hint)
        if self.display is not None:  # nothing to restore: only the face as photos show it
            z = denoised(self.backbone, z, grids, self.display)
        return to_uint8(self.backbone.decode(self._tone(z, grids)))

    def new_nonces(self, count: int) -> list[bytes | None]:
        """Fresh random nonces, or None each in paper mode."""
        return [None if self.paper_mode else new_nonce() for _ in range(count)]

    def anonymize_batch(
        self,
        faces: Sequence[np.ndarray],
        key: SecretKey,
        masks: Sequence[Mask] | None = None,
        progress: Progress | None = None,
    ) -> list[AnonymizedFace]:
        masks = list(masks) if masks is not None else [EllipseMask()] * len(faces)
        nonces = self.new_nonces(len(faces))
        images = self.apply(faces, key, masks, nonces, progress)
        return [
            AnonymizedFace(
                image,
                nonce,
                mask,
                self.backbone.name,
                self.backbone.revision,
                self.steps,
                self.inversion,
                self.transform,
                self.colour,
            )
            for image, nonce, mask in zip(images, nonces, masks, strict=True)
        ]

    def anonymize(
        self,
        face: np.ndarray,
        key: SecretKey,
        mask: Mask | None = None,
        progress: Progress | None = None,
    ) -> AnonymizedFace:
        return self.anonymize_batch([face], key, None if mask is None else [mask], progress)[0]

    def deanonymize_batch(
        self,
        images: Sequence[np.ndarray],
        key: SecretKey,
        masks: Sequence[Mask],
        nonces: Sequence[bytes | None],
        progress: Progress | None = None,
    ) -> list[np.ndarray]:
        return self.apply(images, key, masks, nonces, progress, undo=True)

    def deanonymize(
        self,
        image: np.ndarray,
        key: SecretKey,
        mask: Mask,
        nonce: bytes | None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Undo :meth:`anonymize` with the same key, mask and nonce.

        A wrong key cannot be detected: it gives another face.
        """
        return self.apply([image], key, [mask], [nonce], progress, undo=True)[0]
