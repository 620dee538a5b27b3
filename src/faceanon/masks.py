"""Face masks on the backbone's latent grid (METHOD §5, step 1).

For aligned crops the default is a centred ellipse covering the face of an FFHQ/CelebA-HQ
style crop; landmark masks come with the faces-in-the-wild pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EllipseMask:
    """An axis-aligned ellipse in coordinates relative to the crop (0..1 across and down)."""

    cx: float = 0.5
    cy: float = 0.6
    rx: float = 0.27
    ry: float = 0.33

    def __post_init__(self) -> None:
        if not (self.rx > 0 and self.ry > 0):
            raise ValueError("ellipse radii must be positive")

    def grid(self, height: int, width: int) -> np.ndarray:
        """Boolean (height, width): cells whose centre lies inside the ellipse."""
        y = (np.arange(height) + 0.5) / height
        x = (np.arange(width) + 0.5) / width
        inside = ((x[None, :] - self.cx) / self.rx) ** 2 + ((y[:, None] - self.cy) / self.ry) ** 2
        return np.asarray(inside <= 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "ellipse", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EllipseMask:
        if data.get("kind") != "ellipse":
            raise ValueError(f"unknown mask kind {data.get('kind')!r}")
        return cls(*(float(data[k]) for k in ("cx", "cy", "rx", "ry")))
