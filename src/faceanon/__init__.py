"""faceanon: secure, reversible face anonymization with diffusion models and a secret key.

The public names are imported lazily so that ``faceanon --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "Photo": "faceanon.api",
    "Settings": "faceanon.settings",
    "OutputPolicy": "faceanon.settings",
    "Engine": "faceanon.settings",
    "anonymize_folder": "faceanon.api",
    "restore_folder": "faceanon.api",
    "anonymize_photo": "faceanon.api",
    "anonymize_video": "faceanon.api",
    "restore_video": "faceanon.api",
    "restore_photo": "faceanon.api",
    "save_photo": "faceanon.api",
    "AnonymizedFace": "faceanon.anonymizer",
    "Anonymizer": "faceanon.anonymizer",
    "Backbone": "faceanon.backbones.base",
    "DEFAULT_BACKBONE": "faceanon.backbones.registry",
    "load_backbone": "faceanon.backbones.registry",
    "SecretKey": "faceanon.secure.keys",
    "sign_vector": "faceanon.secure.keys",
    "EllipseMask": "faceanon.faces.masks",
}

__all__ = [
    "DEFAULT_BACKBONE",
    "AnonymizedFace",
    "Anonymizer",
    "Backbone",
    "EllipseMask",
    "Engine",
    "OutputPolicy",
    "Photo",
    "SecretKey",
    "Settings",
    "__version__",
    "anonymize_folder",
    "anonymize_photo",
    "anonymize_video",
    "load_backbone",
    "restore_folder",
    "restore_photo",
    "restore_video",
    "save_photo",
    "sign_vector",
]

if TYPE_CHECKING:
    from faceanon.anonymizer import AnonymizedFace, Anonymizer
    from faceanon.api import (
        Photo,
        anonymize_folder,
        anonymize_photo,
        anonymize_video,
        restore_folder,
        restore_photo,
        restore_video,
        save_photo,
    )
    from faceanon.backbones.base import Backbone
    from faceanon.backbones.registry import DEFAULT_BACKBONE, load_backbone
    from faceanon.faces.masks import EllipseMask
    from faceanon.secure.keys import SecretKey, sign_vector
    from faceanon.settings import Engine, OutputPolicy, Settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'faceanon' has no attribute {name!r}")
