"""How much a small change of the mask changes the keyed noise of a tracked face (issue 27).

    python benchmarks/mix_mask_change.py

On the default ellipse of the 64 x 64 latent grid, Gaussian z_T, one key and nonce: the mask
grown by 26 cells of its border. Prints the relative difference, over the cells both masks
share, between the transformed z_T with the two masks (one track, two frames), beside the
difference with another nonce (another person), for ``mix`` and ``flip``.
"""

from __future__ import annotations

import cv2
import numpy as np

from faceanon.faces.masks import EllipseMask
from faceanon.secure.keys import SecretKey, sign_vector
from faceanon.secure.transforms import mixing_plan

SHAPE = (3, 64, 64)


def main() -> None:
    key = SecretKey(bytes(16))
    cells = EllipseMask().grid(64, 64)
    ring = cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~cells
    grown = cells.copy()
    extra = np.argwhere(ring)[:26]
    grown[extra[:, 0], extra[:, 1]] = True
    z = np.random.default_rng(0).standard_normal(SHAPE)
    shared = np.broadcast_to(cells, SHAPE)

    def mix(where: np.ndarray, nonce: bytes) -> np.ndarray:
        out, inside = z.copy(), z[:, where]
        plan = mixing_plan(key, nonce, 0, inside.size)
        out[:, where] = plan.apply(inside.ravel()).reshape(inside.shape)
        return out

    def flip(where: np.ndarray, nonce: bytes) -> np.ndarray:
        return np.where(np.broadcast_to(where, SHAPE), sign_vector(key, SHAPE, nonce) * z, z)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm((a - b)[shared]) / np.linalg.norm(a[shared]))

    print("| transform | mask 26 cells larger (same track) | another nonce |")
    print("|---|---|---|")
    for name, change in (("mix", mix), ("flip", flip)):
        first = change(cells, b"n" * 16)
        print(
            f"| {name} | {rel(first, change(grown, b'n' * 16)):.3f}"
            f" | {rel(first, change(cells, b'm' * 16)):.3f} |"
        )


if __name__ == "__main__":
    main()
