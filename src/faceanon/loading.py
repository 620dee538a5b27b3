"""Models and face finders, loaded once per process and shared by every front end.

The CLI's jobs, the library API, the web app, video and Ray workers all get their backbone
(:func:`backbone`), face finder (:func:`face_finder`) and anonymizer (:func:`tools`) here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.base import Backbone
    from faceanon.faces.finder import FaceFinder
    from faceanon.secure.keys import SecretKey
    from faceanon.settings import Settings


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


def backbone(
    name: str | None = None, device: str = "auto", model_dir: Path | None = None
) -> Backbone:
    """A registered backbone (None: the default; ``model_dir``: its files from a local
    folder), loaded once per model, folder and device."""
    from faceanon.backbones.registry import DEFAULT_BACKBONE

    return _loaded(name or DEFAULT_BACKBONE, resolve_device(device), model_dir)


@functools.lru_cache(maxsize=4)
def _loaded(name: str, device: str, model_dir: Path | None) -> Backbone:
    from faceanon.backbones.registry import load_backbone

    return load_backbone(name, model_dir=model_dir, device=device)


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
    from faceanon.faces.finder import FaceFinder

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


def settings_finder(settings: Settings, size: int, hint: str | None = None) -> FaceFinder:
    """The face finder ``settings`` ask for, for crops of ``size`` px."""
    s = settings
    return face_finder(
        s.detector, s.threshold, size, s.recall, s.upright_only, s.face_mask, s.parser_model, hint
    )


@dataclass
class Tools:
    """What anonymizing as some settings say takes: the anonymizer (keyflip and hydro; None
    for the classic methods), the face finder (None for aligned crops), the crop size, and
    the model's description for the user (None without one)."""

    anonymizer: Anonymizer | None
    finder: FaceFinder | None
    size: int
    model: str | None


def tools(settings: Settings, key: SecretKey | None) -> Tools:
    """The anonymizer and face finder that ``settings`` ask for (keyflip needs ``key``)."""
    from faceanon.anonymizer import Anonymizer

    s = settings
    if s.keyed and key is None:
        raise FaceanonError(
            f"method {s.method} needs a key (faceanon keygen, or faceanon.SecretKey.generate())"
        )
    anonymizer, size, hint, model = None, 256, None, None
    if s.keyed or s.method == "hydro":
        from faceanon.media.photos import describe_model

        loaded = backbone(s.backbone, s.device, s.model_dir)
        model = describe_model(loaded)
        anonymizer = Anonymizer(loaded, s.steps, s.paper_mode, s.inversion, s.key_transform)
        size, hint = loaded.image_size, getattr(loaded, "conditioning", None)
    finder = None if s.aligned else settings_finder(s, size, hint)
    return Tools(anonymizer, finder, size, model)
