from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_face.png"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The README runs the suite as one process per core (pytest -n auto): each process then
    # takes one torch thread, and so do the commands it starts. Two processes of two threads
    # each on two cores ran the suite in 470 s; one thread each, 142 s (one process: 200 s).
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


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


def composite(
    scales: tuple[float, ...] = (1.0, 0.5, 0.35, 0.25),
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Copies of skimage's astronaut face (NASA, public domain) at several sizes on a grey
    canvas, and where each went: (x, y, width)."""
    import cv2
    from skimage import data

    face = data.astronaut()[20:220, 120:330]
    canvas = np.full((600, 900, 3), 128, np.uint8)
    spots = [(10, 10), (300, 20), (300, 300), (500, 40)]
    placed = []
    for scale, (x, y) in zip(scales, spots, strict=False):
        small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        placed.append((x, y, small.shape[1]))
    return canvas, placed


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where]
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))
