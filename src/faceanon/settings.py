"""Typed settings, validated once: what the library, the CLI, the web app and Ray all take.

:class:`Settings` says how faces are found and anonymized (or restored), :class:`OutputPolicy`
what happens to existing and faceless outputs, :class:`Engine` where a folder runs. A bad
value raises :class:`faceanon.errors.FaceanonError` with one line (the CLI prints it). No
heavy imports here: the choices are checked against the modules that define them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from faceanon.errors import FaceanonError

MASKS = ("landmarks", "parser", "ellipse")
ENGINES = ("local", "ray")
GUIDES = ("sface", "arcface")  # --method hide: faceanon.faces.torch_recognizers
MAX_GUIDE_SCALE = 1000.0


def _choose(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FaceanonError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass(frozen=True)
class Settings:
    """How to anonymize (and, for restores without metadata, how it was done).

    ``method``: keyflip (reversible, needs a key), hydro (irreversible), blur, pixelate,
    solid. ``backbone``: a registered model name (``faceanon models``) or hub id; None: the
    default (restores: the file's). ``model_dir``: a local copy of its files. ``steps`` /
    ``inversion`` (``ddim`` or ``fixed-point:K``): None, the backbone's defaults (the DDIM
    settings). ``transform``: what the key does, ``mix`` (default) or ``flip`` (the paper's;
    the default with ``paper_mode``, which uses no per-image nonce: insecure, the paper's
    setting). ``detector`` / ``threshold`` / ``recall`` / ``upright_only``: the face search;
    ``mask``: landmarks (None: the default), parser (``parser_model``: resnet34, resnet18,
    downloaded once, or an ONNX file) or ellipse. ``aligned``: the inputs are aligned face
    crops of the backbone's size (no search; the ellipse their metadata records).
    ``strength`` / ``repeats``: hydro's. ``guide`` / ``guide_scale``: hide's (the recognizer
    that keeps matching the person, sface or arcface; the guidance scale, None: the default).
    ``device``: auto, cpu, cuda, cuda:N, mps.
    """

    method: str = "keyflip"
    backbone: str | None = None
    model_dir: Path | None = None
    steps: int | None = None
    inversion: str | None = None
    transform: str | None = None
    paper_mode: bool = False
    detector: str = "yunet"
    threshold: float | None = None
    recall: str = "high"
    upright_only: bool = False
    mask: str | None = None
    parser_model: str = "resnet34"
    aligned: bool = False
    device: str = "auto"
    strength: float = 0.6
    repeats: int = 1
    guide: str = "sface"
    guide_scale: float | None = None

    def __post_init__(self) -> None:
        from faceanon.diffusion.ddim_settings import parse_inversion
        from faceanon.faces.detect import DETECTORS, RECALL
        from faceanon.limits import MAX_STEPS
        from faceanon.media.photos import METHODS
        from faceanon.secure.transforms import TRANSFORMS

        _choose(self.method, "method", METHODS)
        _choose(self.detector, "detector", DETECTORS)
        if self.mask is not None:
            _choose(self.mask, "mask", MASKS)
            if self.aligned:
                raise FaceanonError(
                    "--mask is for photos: --aligned crops use the ellipse their metadata records"
                )
        _choose(self.recall, "recall", RECALL)
        if self.transform is not None:
            _choose(self.transform, "transform", TRANSFORMS)
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise FaceanonError(f"steps must be from 1 to {MAX_STEPS}, not {self.steps}")
        if self.inversion is not None:
            try:
                parse_inversion(self.inversion)
            except ValueError as exc:
                raise FaceanonError(f"inversion: {exc}") from None
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise FaceanonError(f"threshold must be in (0, 1], not {self.threshold}")
        if not (math.isfinite(self.strength) and 0 < self.strength <= 1):
            raise FaceanonError(f"strength must be in (0, 1], not {self.strength}")
        if not 1 <= self.repeats <= 10:
            raise FaceanonError(f"repeats must be from 1 to 10, not {self.repeats}")
        _choose(self.guide, "guide", GUIDES)
        scale = self.guide_scale
        if scale is not None and not (math.isfinite(scale) and 0 <= scale <= MAX_GUIDE_SCALE):
            raise FaceanonError(f"guide scale must be from 0 to {MAX_GUIDE_SCALE:g}, not {scale}")

    @property
    def keyed(self) -> bool:
        """Whether the method needs a key (and its output can be restored with it)."""
        return self.method in ("keyflip", "hide")

    @property
    def key_transform(self) -> str:
        """The transform asked for; else the paper's flip in paper mode (its stripped-metadata
        undo re-finds the mask, and only the flip tolerates a mask a few cells off), else the
        default (mix)."""
        from faceanon.secure.transforms import DEFAULT_TRANSFORM

        if self.transform is not None:
            return self.transform
        return "flip" if self.paper_mode else DEFAULT_TRANSFORM

    @property
    def face_mask(self) -> str:
        return self.mask or "landmarks"


@dataclass(frozen=True)
class OutputPolicy:
    """``overwrite``: replace existing outputs (else they are errors, or with ``skip_existing``
    kept: resume an interrupted run); ``write_faceless``: write photos where no face was found
    (else nothing is written for them); ``keep_metadata``: keep the input's EXIF (GPS too!)
    and ICC profile (else dropped); ``jpeg_quality``: of JPEG and WebP outputs (1-100)."""

    overwrite: bool = False
    skip_existing: bool = False
    write_faceless: bool = False
    keep_metadata: bool = False
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if isinstance(self.jpeg_quality, bool) or not 1 <= self.jpeg_quality <= 100:
            raise FaceanonError(f"quality must be from 1 to 100, not {self.jpeg_quality}")


@dataclass(frozen=True)
class Engine:
    """Where a folder runs: ``local`` (this process) or ``ray`` (Ray Data: ``workers`` of one
    CPU and ``gpus_per_worker`` GPUs, on a new local instance or the cluster at ``address``).
    ``batch_size``: photos prepared together, and faces per network call."""

    name: str = "local"
    batch_size: int = 1
    workers: int = 2
    address: str | None = None
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        _choose(self.name, "engine", ENGINES)
        if self.batch_size < 1:
            raise FaceanonError(f"batch size must be at least 1, not {self.batch_size}")
        if self.workers < 1:
            raise FaceanonError(f"workers must be at least 1, not {self.workers}")
        if not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise FaceanonError(f"gpus per worker must be 0 or more, not {self.gpus_per_worker}")
