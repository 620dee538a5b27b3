"""What the key does to the inverted noise z_T inside the face (METHOD §4, §8).

``flip`` (the paper's): multiply by a key-derived sign vector r. Its own inverse, and it keeps
every magnitude |z_T|: inverted latents of real images are not white noise, so the pattern of
magnitudes links an anonymized face to its source (the linkage attack of ``faceanon evaluate``).

``mix`` (faceanon's hardened transform): a keyed orthogonal mixing of all the masked
coordinates of z_T. 32 rounds, each a keyed permutation followed by Givens rotations of
consecutive pairs with keyed angles uniform in [0, 2 pi). Orthogonal, so N(0, I) stays exactly
N(0, I) (the sampler sees noise of the law it expects) and the inverse is the transpose (the
rounds backwards, angles negated); only the norm of the masked noise survives. How far 32
rounds spread one coordinate, beside a random rotation: ``benchmarks/mix_spread.py``
(docs/evaluation.md "How far mix spreads a coordinate").

Key material for both: SHAKE-256 over length-prefixed (domain, key, nonce or "paper", face
index, and the shape or count), like :func:`faceanon.secure.keys.sign_vector`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from faceanon.secure.keys import SecretKey, keyed_stream, nonce_fields

TRANSFORMS = ("flip", "mix")
DEFAULT_TRANSFORM = "mix"  # chosen from the linkage attack, docs/evaluation.md
MIX_ROUNDS = 32


@dataclass(frozen=True, eq=False)
class MixingPlan:
    """The keyed rounds for ``count`` coordinates: a permutation and count // 2 angles each."""

    permutations: tuple[np.ndarray, ...]
    angles: tuple[np.ndarray, ...]

    @property
    def count(self) -> int:
        return len(self.permutations[0])

    def apply(self, values: np.ndarray, inverse: bool = False) -> np.ndarray:
        """The mixing (or its inverse, the transpose) of a vector of ``count`` values."""
        if values.shape != (self.count,):
            raise ValueError(f"expected {self.count} values, got shape {values.shape}")
        x = values.astype(np.float64)
        pairs = 2 * (self.count // 2)
        rounds = list(zip(self.permutations, self.angles, strict=True))
        for perm, theta in reversed(rounds) if inverse else rounds:
            cos, sin = np.cos(theta), np.sin(theta)
            if not inverse:
                x = x[perm]
            a, b = x[0:pairs:2].copy(), x[1:pairs:2].copy()
            if inverse:
                sin = -sin
            x[0:pairs:2], x[1:pairs:2] = cos * a - sin * b, sin * a + cos * b
            if inverse:
                undone = np.empty_like(x)
                undone[perm] = x
                x = undone
        return x


def mixing_plan(key: SecretKey, nonce: bytes | None, face_index: int, count: int) -> MixingPlan:
    """The plan for one face: depends on key, nonce (None: paper mode), face and count."""
    if count < 1:
        raise ValueError("nothing to mix")
    fields = (*nonce_fields(nonce, face_index), struct.pack(">Q", count))
    per_round = 8 * count + 4 * (count // 2)
    stream = keyed_stream(b"faceanon/mix/v1", key, fields, MIX_ROUNDS * per_round)
    permutations, angles = [], []
    for r in range(MIX_ROUNDS):
        chunk = stream[r * per_round : (r + 1) * per_round]
        order = np.frombuffer(chunk[: 8 * count], dtype=">u8")
        permutations.append(np.argsort(order, kind="stable"))
        turns = np.frombuffer(chunk[8 * count :], dtype=">u4").astype(np.float64)
        angles.append(turns * (2 * np.pi / 2**32))
    return MixingPlan(tuple(permutations), tuple(angles))
