"""Whole photos in, anonymized or restored photos and their metadata out: the work behind
``faceanon anonymize`` / ``deanonymize`` and the web app, shared so both say and do the same.

Reading files, choosing and loading models and writing outputs stay with the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.errors import MetadataError
from faceanon.faces.finder import Face, crop_geometry
from faceanon.faces.masks import EllipseMask
from faceanon.faces.replace import box_coverage, classic, hide, hydro, keyflip, transform_photos
from faceanon.media.io import is_grey
from faceanon.secure.container import REVERSIBLE, Box, FaceRecord, Geometry, Metadata, cover_box

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.methods.display import Steady
    from faceanon.methods.keyflip import Progress
    from faceanon.secure.keys import SecretKey

CLASSIC = ("blur", "pixelate", "solid")
# hydro: irreversible, on the diffusion backbone; hide: keyflip with identity guidance
METHODS = ("keyflip", "hide", "hydro", *CLASSIC)


@dataclass(frozen=True)
class Outcome:
    image: np.ndarray
    metadata: str | None  # the faceanon metadata to store with an anonymized image
    boxes: list[Box | None]  # the faces covered, in the photo (None: an aligned crop)
    coverage: list[float | None] = field(default_factory=list)  # share of each box replaced
    # keyflip: given the pixels a lossy file of the image decodes to, its exact face data
    latents: Callable[[np.ndarray], bytes] | None = field(default=None, repr=False)
    geometry: list[Geometry] = field(default_factory=list, repr=False)  # as the restore sees it
    # where the restore's faces are not the ones shown (hide's, a grey photo's): the image
    # with the faces the restore starts from
    exact_image: np.ndarray | None = field(default=None, repr=False)


def describe_model(backbone: Backbone, terminal: bool = True) -> str:
    """What anonymizes the faces, in one line (the user must know which model it was); the
    way to a photo-real model as a command-line option only for the ``terminal``."""
    rev = f"@{backbone.revision[:12]}" if backbone.revision else ""
    other = "--backbone ldm-celebahq-256" if terminal else "the model ldm-celebahq-256"
    if backbone.name in ("face-prior", "face-net"):
        return (
            f"{backbone.name}{rev} (embedded, offline: face-like but blurry 64-px faces;"
            f" {other} for photo-real faces)"
        )
    return f"{backbone.name}{rev}"


def output_name(name: str, tag: str) -> str:
    """``photo.jpg`` -> ``photo_anonymized.png``; ``photo_anonymized.png`` ->
    ``photo_deanonymized.png``."""
    stem = PurePath(name).stem
    stem = stem.removesuffix("_anonymized") if tag == "deanonymized" else stem
    return f"{stem}_{tag}.png"


def _classic(method: str) -> Any:
    from faceanon.methods.classic import Blur, Pixelate, Solid

    return {"blur": Blur, "pixelate": Pixelate, "solid": Solid}[method]()


def readable(text: str) -> str:
    """``text``, the metadata about to be written, if ``deanonymize`` will accept it: every
    bound the reader enforces (faces per photo, sizes, lengths) refuses the work here, before
    an output that could never be restored is written."""
    try:
        Metadata.from_json(text)
    except MetadataError as exc:
        reason = str(exc).replace("faceanon metadata is damaged ", "")
        raise MetadataError(
            f"its output could not be restored {reason}; nothing written (a higher"
            " --threshold finds fewer faces)"
        ) from None
    return text


def anonymize(
    images: Sequence[np.ndarray],
    faces: Sequence[Sequence[Face]],
    method: str,
    *,
    anonymizer: Anonymizer | None = None,
    key: SecretKey | None = None,
    batch_size: int = 1,
    progress: Progress | None = None,
    aligned: bool = False,
    fixed_nonce: bytes | None = None,
    nonces: Sequence[Sequence[bytes | None]] | None = None,
    strength: float = 0.6,
    repeats: int = 1,
    guide: str = "sface",
    guide_scale: float | None = None,
    steady: Steady | None = None,
) -> list[Outcome]:
    """Each photo with its ``faces`` anonymized by ``method`` (keyflip needs ``anonymizer``
    and ``key``), and the metadata that lets the key undo it. ``aligned``: each image is one
    aligned face crop (``faces`` holds the crop itself). ``fixed_nonce``: the nonce of every face
    and of every metadata seal, only for tests that compare two runs byte for byte (default:
    fresh random ones). ``nonces``: each face's nonce, given (a video's tracked person keeps
    one); default: fresh ones. ``strength`` and ``repeats``: ``hydro``'s (see
    :meth:`Anonymizer.deidentify`); ``guide`` and ``guide_scale``: ``hide``'s (see
    :meth:`Anonymizer.hide`); ``steady``: a video's tracks shown steadied (keyflip's, where the
    faces are shown denoised: :class:`~faceanon.methods.display.Steady`)."""
    reversible = method in REVERSIBLE
    # hide's unguided faces, or keyflip's exact ones where it shows them denoised: the faces
    # the restore starts from
    plain: list[np.ndarray] = []
    if reversible:
        if anonymizer is None or key is None:
            raise ValueError(f"{method} needs an anonymizer and a key")
        backbone = anonymizer.backbone
        if method == "hide":
            transform = hide(anonymizer, key, guide, guide_scale, batch_size, progress, plain)
        else:
            transform = keyflip(anonymizer, key, batch_size, progress, plain=plain, steady=steady)
        grid: tuple[int, int] = tuple(backbone.latent_shape[1:])  # type: ignore[assignment]
    elif method == "hydro":
        if anonymizer is None:
            raise ValueError("hydro needs an anonymizer (its backbone)")
        transform = hydro(anonymizer, strength, repeats, batch_size, progress)
        grid = tuple(anonymizer.backbone.latent_shape[1:])  # type: ignore[assignment]
        anonymizer, key = None, None  # nothing keyed is written
    else:
        transform = classic(_classic(method))
        grid = (256, 256)

    def describe(
        image: np.ndarray, found: Sequence[Face], nonces: Sequence[bytes | None]
    ) -> tuple[str, list[Geometry]]:
        """The metadata, and the geometry to anonymize with (for photos with a key: the
        geometry as the key will open it)."""
        height, width = image.shape[:2]
        geometry = [f.geometry for f in found]
        if not aligned and (anonymizer is None or key is None):  # no seal: cover the boxes now
            geometry = output_geometry(found, sealed=False)
        records = tuple(
            FaceRecord(
                nonce,
                None if aligned else f.box,
                EllipseMask() if aligned and reversible else None,
            )
            for f, nonce in zip(found, nonces, strict=True)
        )
        if anonymizer is None or key is None:
            return Metadata(method, records, photo_size=(width, height)).to_json(), geometry
        meta = Metadata(
            method,
            records,
            anonymizer.backbone.name,
            anonymizer.backbone.revision,
            anonymizer.steps,
            photo_size=None if aligned else (width, height),
            inversion=anonymizer.inversion,
            transform=anonymizer.transform,
            cover=None if aligned else "box",  # the seal opens the outline, the box grows it
            colour=anonymizer.colour if method == "keyflip" else None,  # hide: none
            display=anonymizer.display if method == "keyflip" else None,
        )
        if not aligned and found:
            meta, geometry = meta.seal(key, geometry, fixed_nonce)
        return readable(meta.to_json()), geometry

    def new_nonces(count: int) -> list[bytes | None]:
        if anonymizer is None:
            return [None] * count
        if fixed_nonce is not None and not anonymizer.paper_mode:
            return [fixed_nonce] * count
        return anonymizer.new_nonces(count)

    if nonces is None or not reversible:  # only the reversible method has nonces to keep
        nonces = [new_nonces(len(found)) for found in faces]
    described = [
        describe(image, found, face_nonces)
        for image, found, face_nonces in zip(images, faces, nonces, strict=True)
    ]
    regions = [g for _, g in described]
    out = transform_photos(images, regions, nonces, transform, grid)
    exact_from = out
    if plain:  # the same photos with the faces the restore starts from, pasted the same way
        exact_from = transform_photos(images, regions, nonces, lambda c, *_: plain[: len(c)], grid)
    # A grey photo's faces stay grey, whatever drew them (a restore starts from exact_from).
    out = [
        grey_faces(o, image) if is_grey(image) else o for o, image in zip(out, images, strict=True)
    ]
    return [
        Outcome(
            image,
            text,
            [f.box for f in found],
            [
                None if aligned else box_coverage(g, f.box, image.shape, grid)
                for f, g in zip(found, geometry, strict=True)
            ],
            None
            if anonymizer is None or key is None
            else _exact(anonymizer, exact, geometry, text),
            geometry,
            None if exact is image else exact,
        )
        for image, exact, found, (text, geometry) in zip(
            out, exact_from, faces, described, strict=True
        )
    ]


def grey_faces(image: np.ndarray, before: np.ndarray) -> np.ndarray:
    """``image`` with the pixels that differ from ``before`` (its new or restored faces) made
    grey (their luma, ITU-R BT.601): a black-and-white photo's faces stay grey. The restore
    does not start from these pixels but from the exact latents of the coloured faces the file
    carries (:func:`faceanon.media.io.needs_exact_data`)."""
    changed = (image != before).any(axis=-1)
    luma = np.round(image[changed] @ np.array([0.299, 0.587, 0.114]))
    out = image.copy()
    out[changed] = np.clip(luma, 0, 255).astype(np.uint8)[:, None]
    return out


def _exact(
    anonymizer: Anonymizer, image: np.ndarray, geometry: Sequence[Geometry], text: str
) -> Callable[[np.ndarray], bytes]:
    """:attr:`Outcome.latents`: the exact latents are computed only if a lossy copy is made."""
    from faceanon.media.latents import ExactFaces

    return lambda lossy: ExactFaces.of(anonymizer, image, geometry, text).data(lossy)


def output_geometry(faces: Sequence[Face], sealed: bool) -> list[Geometry]:
    """The region each face's output replaces, as :func:`anonymize` makes it: its outline grown
    over its box; ``sealed`` (keyflip), the outline first as the metadata carries it (its 12
    principal components, or its public parts), which is the same under every key: the one
    the right key opens (for evaluations, which have no metadata to open)."""
    if not sealed or not faces:
        return [cover_box(f.geometry, f.box) for f in faces]
    from faceanon.secure.container import SEAL_NONCE_BYTES
    from faceanon.secure.keys import SecretKey

    meta = Metadata("keyflip", tuple(FaceRecord(None, f.box) for f in faces), cover="box")
    any_key, any_nonce = SecretKey(bytes(16)), bytes(SEAL_NONCE_BYTES)
    return meta.seal(any_key, [f.geometry for f in faces], any_nonce)[1]


def read_metadata(name: object, text: str) -> Metadata:
    """The metadata of an image to restore, checked; errors name the file."""
    try:
        meta = Metadata.from_json(text)
    except MetadataError as exc:
        raise MetadataError(f"{name}: {exc}") from None
    if meta.method not in REVERSIBLE:
        raise MetadataError(f"{name}: made with --method {meta.method}: not reversible")
    return meta


@dataclass(frozen=True)
class RestoreWork:
    """What restoring a file costs: its faces times the network calls of one face's restore
    (the file chooses its steps and inversion, within the reader's bounds)."""

    faces: int
    per_face: int
    backbone: str
    steps: int
    inversion: str

    @property
    def calls(self) -> int:
        return self.faces * self.per_face

    def __str__(self) -> str:
        plural = "" if self.faces == 1 else "s"
        return (
            f"{self.faces} face{plural} x {self.per_face} network calls ({self.backbone},"
            f" T = {self.steps}, {self.inversion}): {self.calls} calls"
        )


def restore_work(
    faces: int, backbone: str, steps: int | None, inversion: str | None = None
) -> RestoreWork:
    """The work of restoring ``faces`` faces with ``backbone`` at ``steps`` and ``inversion``
    (None: the backbone's default), as a file or an anonymizer asks for it."""
    from faceanon.diffusion.ddim_settings import ddim_defaults, network_calls, parse_inversion

    chosen = inversion or ddim_defaults(backbone)[1]
    per_face = network_calls(steps, parse_inversion(chosen)) if steps else 0
    return RestoreWork(faces, per_face, backbone, steps or 0, chosen)


def check_backbone(name: object, meta: Metadata, registered: Sequence[str]) -> str:
    """The backbone a file names, if a file may choose it: only a registered one (what is
    downloaded is the user's choice, not the file's)."""
    chosen = str(meta.backbone)
    if chosen not in registered:
        raise MetadataError(
            f"{name}: made with the hub model {chosen[:80]!r}, which a file cannot choose;"
            f" if you trust it, pass --backbone {chosen[:80]}"
        )
    return chosen


def restore_geometry(
    name: object,
    image: np.ndarray,
    meta: Metadata,
    key: SecretKey,
    size: int,
    finder: Callable[[], Any],
    detect: bool = False,
) -> tuple[Metadata, list[Geometry]]:
    """Where the faces are, as ``key`` opens the metadata (``finder()``: a FaceFinder for
    ``size`` px crops, for format-2 seals this key does not open). ``detect``: a paper-mode
    image without metadata, whose faces are found and masked anew."""
    height, width = image.shape[:2]
    if meta.aligned:
        if (height, width) != (size, size):
            raise MetadataError(f"{name}: size {width}x{height} is not {size}x{size}")
        return meta, [crop_geometry(size, meta.faces[0].mask or EllipseMask())]
    if detect:
        faces = finder().find(image)  # and covered as anonymize covers them
        meta = replace(meta, faces=tuple(FaceRecord(None, f.box) for f in faces))
        return meta, [cover_box(f.geometry, f.box) for f in faces]
    if meta.photo_size != (width, height):
        was = "x".join(str(v) for v in meta.photo_size or ())
        raise MetadataError(
            f"{name}: is {width}x{height} but was anonymized at {was} (resized?); cannot restore"
        )
    opened = meta.open(key, size) if meta.faces else []
    # None: a format-2 seal that this key does not open; find the faces anew, silently.
    geometry = opened or [finder().at(image, f.box).geometry for f in meta.faces]
    if any(g.alignment.size != size for g in geometry):
        raise MetadataError(f"{name}: face crops are not {size} px for this backbone")
    return meta, geometry


def restore(
    batch: Sequence[tuple[np.ndarray, Metadata, Backbone, list[Geometry]]],
    key: SecretKey,
    *,
    inversion: str | None = None,
    batch_size: int = 1,
    progress: Progress | None = None,
    residuals: Sequence[Sequence[np.ndarray | None] | None] | None = None,
) -> list[Outcome]:
    """Each (image, metadata, backbone, geometry) restored with ``key``; files may differ in
    backbone, steps, inversion, transform and tone shift: one run for each combination.
    ``residuals``: per item, its exact face data (:func:`faceanon.media.latents.exact_faces`)
    or None; ignored where the faces were found anew (their count differs)."""
    from faceanon.anonymizer import Anonymizer
    from faceanon.diffusion.ddim_settings import ddim_defaults

    results: list[Outcome | None] = [None] * len(batch)
    groups: dict[tuple[int, int, str, str, float | None], list[int]] = {}
    for i, (_, meta, backbone, _) in enumerate(batch):
        chosen = inversion or meta.inversion or ddim_defaults(backbone.name)[1]
        change = meta.transform or "flip"  # a file without it: faceanon 0.1, the flip
        if meta.colour is not None and not getattr(backbone, "colour_latent", False):
            raise MetadataError(f"a tone shift is recorded, but {backbone.name} has none")
        group = (id(backbone), int(meta.steps or 0), chosen, change, meta.colour)
        groups.setdefault(group, []).append(i)
    for (_, steps, chosen, change, colour), indices in groups.items():
        backbone = batch[indices[0]][2]
        anonymizer = Anonymizer(backbone, steps, inversion=chosen, transform=change, colour=colour)
        transform = keyflip(anonymizer, key, batch_size, progress, undo=True)
        given = [None if residuals is None else residuals[i] for i in indices]
        images = transform_photos(
            [batch[i][0] for i in indices],
            [batch[i][3] for i in indices],
            [[f.nonce for f in batch[i][1].faces] for i in indices],
            transform,
            backbone.latent_shape[1:],
            [
                r if r is not None and len(r) == len(batch[i][3]) else None
                for i, r in zip(indices, given, strict=True)
            ],
        )
        for i, image in zip(indices, images, strict=True):
            source = batch[i][0]
            image = grey_faces(image, source) if is_grey(source) else image
            results[i] = Outcome(image, None, [f.box for f in batch[i][1].faces])
    return [r for r in results if r is not None]
