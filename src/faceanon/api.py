"""The library's front door: anonymize or restore a whole photo with typed settings.

    import faceanon
    key = faceanon.SecretKey.generate()
    anon = faceanon.anonymize_photo("photo.jpg", key)          # .image, .metadata, .boxes
    faceanon.save_photo(anon, "photo_anonymized.png")
    back = faceanon.restore_photo("photo_anonymized.png", key)

The photo goes the way ``faceanon anonymize`` takes it: faces found, their geometry sealed
under the key and opened again, each face anonymized in its crop and pasted back; the metadata
is what the command writes. Models and face finders are loaded once per process and reused
(:func:`backbone`, :func:`face_finder`). Errors are :class:`faceanon.errors.FaceanonError`
with the one-line message the command prints.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.container import Box
    from faceanon.keys import SecretKey
    from faceanon.pipeline import FaceFinder
    from faceanon.video import Summary

MASKS = ("landmarks", "parser", "ellipse")


@dataclass(frozen=True)
class Settings:
    """How to anonymize, checked when made (a bad value: FaceanonError, one line).

    ``method``: keyflip (reversible, needs a key), hydro (irreversible), blur, pixelate,
    solid. ``backbone``: a registered model name (``faceanon models``); None: the default.
    ``steps`` / ``inversion`` (``ddim`` or ``fixed-point:K``): None, the backbone's defaults.
    ``transform``: ``mix`` (default) or ``flip`` (the paper's). ``detector`` / ``threshold`` /
    ``recall`` / ``upright_only``: the face search; ``mask``: landmarks, parser
    (``parser_model``: resnet34, resnet18, downloaded once, or an ONNX file) or ellipse.
    ``strength`` / ``repeats``: hydro's.
    """

    method: str = "keyflip"
    backbone: str | None = None
    steps: int | None = None
    inversion: str | None = None
    transform: str | None = None
    detector: str = "yunet"
    threshold: float | None = None
    recall: str = "high"
    upright_only: bool = False
    mask: str = "landmarks"
    parser_model: str = "resnet34"
    device: str = "cpu"
    strength: float = 0.6
    repeats: int = 1

    def __post_init__(self) -> None:
        from faceanon.engine import parse_inversion
        from faceanon.faces.detect import RECALL
        from faceanon.limits import MAX_STEPS
        from faceanon.photos import METHODS
        from faceanon.transforms import TRANSFORMS

        def choose(value: object, name: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise FaceanonError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")

        choose(self.method, "method", METHODS)
        choose(self.mask, "mask", MASKS)
        choose(self.recall, "recall", RECALL)
        if self.transform is not None:
            choose(self.transform, "transform", TRANSFORMS)
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise FaceanonError(f"steps must be from 1 to {MAX_STEPS}, not {self.steps}")
        if self.inversion is not None:
            try:
                parse_inversion(self.inversion)
            except ValueError as exc:
                raise FaceanonError(f"inversion: {exc}") from None
        if not (math.isfinite(self.strength) and 0 < self.strength <= 1):
            raise FaceanonError(f"strength must be in (0, 1], not {self.strength}")
        if not 1 <= self.repeats <= 10:
            raise FaceanonError(f"repeats must be from 1 to 10, not {self.repeats}")


@dataclass
class Photo:
    """A photo anonymized or restored: the image (uint8 RGB), the metadata to store with it
    (anonymized with a key; None otherwise), each face's box and the share of it replaced."""

    image: np.ndarray
    metadata: str | None
    boxes: list[Box | None] = field(default_factory=list)
    coverage: list[float | None] = field(default_factory=list)


def resolve_device(name: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N or mps, checked against this torch build."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise FaceanonError(f"--device {name}: unknown device (auto, cpu, cuda, cuda:N, mps)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FaceanonError(
                f"--device {name}: no CUDA GPU available to this torch build "
                f"({torch.__version__}); use --device cpu or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= count:
            raise FaceanonError(f"--device {name}: only {count} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FaceanonError(f"--device {name}: Apple MPS is not available here")
    return name


def backbone(name: str | None = None, device: str = "cpu") -> Backbone:
    """A registered backbone (None: the default), loaded once per model and device."""
    from faceanon.backbones.registry import DEFAULT_BACKBONE

    return _loaded(name or DEFAULT_BACKBONE, resolve_device(device))


@functools.lru_cache(maxsize=4)
def _loaded(name: str, device: str) -> Backbone:
    from faceanon.backbones.registry import load_backbone

    return load_backbone(name, device=device)


@functools.lru_cache(maxsize=8)
def face_finder(
    detector: str = "yunet",
    threshold: float | None = None,
    size: int = 256,
    recall: str = "high",
    upright_only: bool = False,
    mask: str = "landmarks",
    parser_model: str = "resnet34",
    hint: str | None = None,
) -> FaceFinder:
    """The face finder for these options (crops of ``size`` px; ``hint``: a landmark
    ControlNet's hint kind), made once and reused."""
    from faceanon.pipeline import FaceFinder

    segmenter = None
    if mask == "parser":
        from faceanon.faces.parser import FaceParser, model_file

        segmenter = FaceParser(model_file(parser_model))
    try:
        return FaceFinder(
            detector,
            threshold,
            size,
            sideways=not upright_only,
            recall=recall,
            segmenter=segmenter,
            ellipse=mask == "ellipse",
            hint=hint,
        )
    except ValueError as exc:
        raise FaceanonError(str(exc)) from None


def _read(photo: np.ndarray | str | PurePath) -> tuple[str, np.ndarray, str | None]:
    """(a name for messages, the RGB image, the faceanon metadata it carries)."""
    if isinstance(photo, (str, PurePath)):
        from faceanon.io import read_image

        picture = read_image(Path(photo))
        return str(photo), picture.image, picture.faceanon
    image = np.asarray(photo)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FaceanonError(f"the photo must be uint8 RGB (height, width, 3), not {image.shape}")
    return "photo", image, None


def anonymize_photo(
    photo: np.ndarray | str | PurePath,
    key: SecretKey | None = None,
    settings: Settings | None = None,
) -> Photo:
    """Every face of ``photo`` (an array or a file) anonymized as ``settings`` say (default:
    keyflip with the default backbone, which needs ``key``)."""
    from faceanon import photos

    s = settings or Settings()
    image = _read(photo)[1]
    anonymizer, finder = _tools(s, key)
    faces = finder.find(image)
    [out] = photos.anonymize(
        [image],
        [faces],
        s.method,
        anonymizer=anonymizer,
        key=key if s.method == "keyflip" else None,
        strength=s.strength,
        repeats=s.repeats,
    )
    return Photo(out.image, out.metadata, out.boxes, out.coverage)


def restore_photo(
    photo: np.ndarray | str | PurePath,
    key: SecretKey,
    metadata: str | None = None,
    device: str = "cpu",
) -> Photo:
    """``photo`` as it was before ``anonymize_photo`` (or ``faceanon anonymize``) with ``key``;
    ``metadata``: the text stored with it (read from the file when ``photo`` is a path). A
    wrong key gives other faces, silently, as the command does."""
    from faceanon import photos
    from faceanon.backbones.registry import MODELS

    name, image, stored = _read(photo)
    text = metadata if metadata is not None else stored
    if text is None:
        raise FaceanonError(f"{name}: no faceanon metadata (stripped or re-saved?)")
    meta = photos.read_metadata(name, text)
    model = backbone(photos.check_backbone(name, meta, list(MODELS)), device)
    size = model.image_size
    meta, geometry = photos.restore_geometry(
        name, image, meta, key, size, lambda: face_finder(size=size)
    )
    [out] = photos.restore([(image, meta, model, geometry)], key)
    return Photo(out.image, None, out.boxes)


def _tools(s: Settings, key: SecretKey | None) -> tuple[Anonymizer | None, FaceFinder]:
    """The anonymizer (keyflip and hydro) and face finder that ``s`` asks for."""
    from faceanon.anonymizer import Anonymizer
    from faceanon.transforms import DEFAULT_TRANSFORM

    if s.method == "keyflip" and key is None:
        raise FaceanonError("method keyflip needs a key (faceanon.SecretKey.generate())")
    anonymizer, size, hint = None, 256, None
    if s.method in ("keyflip", "hydro"):
        model = backbone(s.backbone, s.device)
        transform = s.transform or DEFAULT_TRANSFORM
        anonymizer = Anonymizer(model, s.steps, False, s.inversion, transform)
        size, hint = model.image_size, getattr(model, "conditioning", None)
    finder = face_finder(
        s.detector, s.threshold, size, s.recall, s.upright_only, s.mask, s.parser_model, hint
    )
    return anonymizer, finder


def anonymize_video(
    src: str | PurePath,
    dst: str | PurePath,
    key: SecretKey | None = None,
    settings: Settings | None = None,
    overwrite: bool = False,
) -> Summary:
    """Every tracked face of the video ``src`` anonymized into ``dst`` (keyflip: a lossless
    ``.mkv`` carrying the metadata; the classic methods: H.264 in ``dst``'s container), as
    ``faceanon anonymize`` does; the summary says frames, faces, tracks and warnings."""
    from faceanon import video

    s = settings or Settings()
    anonymizer, finder = _tools(s, key)
    key = key if s.method == "keyflip" else None
    return video.anonymize_video(
        Path(src), Path(dst), s.method, finder, anonymizer=anonymizer, key=key, overwrite=overwrite
    )


def restore_video(
    src: str | PurePath,
    dst: str | PurePath,
    key: SecretKey,
    device: str = "cpu",
    overwrite: bool = False,
) -> Summary:
    """The video ``anonymize_video`` (or the command) made, restored with ``key`` into
    ``dst`` (lossless ``.mkv``)."""
    from faceanon import photos, video
    from faceanon.backbones.registry import MODELS

    def backbone_for(path: Path, meta: Any) -> Backbone:
        return backbone(photos.check_backbone(path, meta, list(MODELS)), device)

    return video.deanonymize_video(
        Path(src),
        Path(dst),
        key,
        backbone_for,
        lambda size: face_finder(size=size),
        overwrite=overwrite,
    )


def save_photo(photo: Photo, path: str | PurePath, overwrite: bool = False) -> None:
    """Write ``photo`` with its metadata: PNG (lossless, the restore is exact) or JPEG,
    atomically; an existing file is an error unless ``overwrite``."""
    from faceanon.io import write_image

    write_image(Path(path), photo.image, photo.metadata, overwrite=overwrite)
