from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_face.png"


@pytest.fixture(scope="session")
def face() -> np.ndarray:
    """The committed 256x256 crop of skimage's public-domain astronaut photo (NASA)."""
    return np.asarray(Image.open(EXAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def closed_form():
    from faceanon.backbones.closed_form import GaussianBackbone

    return GaussianBackbone()


@pytest.fixture(scope="session")
def tiny():
    from faceanon.backbones.builtin import build_backbone

    return build_backbone("tiny")


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where]
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))
