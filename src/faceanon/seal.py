"""The per-face geometry, hidden under the key without a key oracle (metadata format 3).

What must stay private: how each face was cut from the photo (the alignment: centre, side and
roll of the crop) and which part of the crop was changed (the face polygon). Both follow the
person's face proportions. What must not happen: that a candidate key can be checked against a
file. An authenticated cipher (format 2) fails loudly on a wrong key, so one anonymized photo
let anyone test passphrase guesses offline at the cost of one scrypt each.

Format 3 therefore uses an encoding in which *every* key opens *every* file into a geometry of
the kind real faces have (the idea of honey encryption, Juels and Ristenpart 2014):

1. per face, 36 numbers ``x``: the crop centre relative to the (public) detection box, in the
   face's own frame, in box units (2); the log of the crop side over the box side (1); the roll
   relative to the nearest quarter turn (1, the quarter turn itself is public: it is visible);
   the face polygon as 32 radii from the crop centre, in crop sides (32);
2. whitened with a Gaussian prior fitted on real faces, ``w = A^-1 (x - mean)``, so that the
   coordinates of ``w`` are independent standard normals for real faces;
3. each ``w_j`` mapped to a 64-bit integer through the normal distribution function (uniform
   for real faces) and added modulo 2^64 to a SHAKE-256 keystream of (key, seal nonce, face).

Opening with any key reverses the three steps. With the right key the geometry comes back (the
anonymization itself uses the decoded geometry, so the restore is exact); with a wrong key the
integers are uniform, so the geometry is a random draw from the prior: another plausible face
cut, and nothing the program does differs. What remains for an attacker is statistical: how
far the prior is from the faces of a given photo collection (measured in
``benchmarks/geometry_oracle.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from faceanon.faces.align import Alignment
from faceanon.masks import LandmarkMask

if TYPE_CHECKING:
    from faceanon.container import Box, Geometry
    from faceanon.keys import SecretKey

RAYS = 32
PARAMS = 4 + RAYS
W_LIMIT = 9.0  # whitened values are clipped here: a prior draw never exceeds it
_TWO64 = 1 << 64
_NORMAL = NormalDist()
PRIOR_FILE = "geometry_prior.json"


@dataclass(frozen=True, eq=False)
class GeometryPrior:
    """A Gaussian over the 36 geometry numbers: mean and lower-triangular Cholesky factor."""

    mean: np.ndarray  # (PARAMS,)
    chol: np.ndarray  # (PARAMS, PARAMS)

    def whiten(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(np.linalg.solve(self.chol, x - self.mean))

    def color(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self.mean + self.chol @ w)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """What a wrong key decodes to (before clipping): a draw from the prior."""
        return self.color(np.clip(rng.standard_normal(PARAMS), -W_LIMIT, W_LIMIT))


@lru_cache(maxsize=1)
def default_prior() -> GeometryPrior:
    """The prior shipped with faceanon (``faceanon/data/geometry_prior.json``)."""
    text = resources.files("faceanon.data").joinpath(PRIOR_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    mean = np.array(data["mean"], dtype=np.float64)
    chol = np.array(data["cholesky"], dtype=np.float64)
    if mean.shape != (PARAMS,) or chol.shape != (PARAMS, PARAMS):
        raise ValueError(f"{PRIOR_FILE}: wrong shapes")
    return GeometryPrior(mean, chol)


# --- geometry <-> 36 numbers ----------------------------------------------------------------


def _box_frame(box: Box) -> tuple[np.ndarray, float]:
    x0, y0, x1, y1 = box
    side = math.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6))
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), side


def _ray_directions() -> np.ndarray:
    angles = 2 * np.pi * np.arange(RAYS) / RAYS
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def polar_radii(polygon: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """For each of the RAYS directions, the farthest crossing of the polygon's outline by the
    ray from ``centre`` (0 where the ray crosses nothing)."""
    rays = _ray_directions()  # (R, 2)
    start = polygon - centre  # (N, 2), relative to the centre
    edge = np.roll(polygon, -1, axis=0) - polygon  # (N, 2)

    def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])

    denom = cross(rays[:, None, :], edge[None, :, :])  # (R, N)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = cross(start[None, :, :], edge[None, :, :]) / denom
        u = cross(start[None, :, :], rays[:, None, :]) / denom
    hit = (np.abs(denom) > 1e-12) & (u >= 0) & (u <= 1) & (t >= 0)
    return np.asarray(np.where(hit, t, 0.0).max(axis=1))


def quarter_turn(geometry: Geometry) -> int:
    """The public part of the roll: the nearest quarter turn of the face's eye axis."""
    a, b = geometry.alignment.matrix[0, :2]
    return round(math.atan2(b, a) / (math.pi / 2)) % 4


def to_params(geometry: Geometry, box: Box) -> np.ndarray:
    """The 36 numbers of a face's geometry (see the module docstring)."""
    alignment, mask = geometry.alignment, geometry.mask
    if not isinstance(mask, LandmarkMask):
        raise ValueError("only polygon masks are sealed")
    size = alignment.size
    a, b = alignment.matrix[0, :2]
    roll = math.atan2(b, a)
    turn = quarter_turn(geometry)
    delta = (roll - turn * math.pi / 2 + math.pi) % (2 * math.pi) - math.pi
    side = size / math.hypot(a, b)
    centre = alignment.to_photo(np.array([[size / 2, size / 2]]))[0]
    box_centre, box_side = _box_frame(box)
    along, down = (
        np.array([math.cos(roll), math.sin(roll)]),
        np.array([-math.sin(roll), math.cos(roll)]),
    )
    offset = (centre - box_centre) / box_side
    radii = polar_radii(mask.polygon, np.array([size / 2, size / 2])) / size
    head = [offset @ along, offset @ down, math.log(side / box_side), delta]
    return np.concatenate([np.array(head), radii])


def from_params(x: np.ndarray, box: Box, turn: int, size: int) -> Geometry:
    """The geometry that 36 numbers describe (the inverse of :func:`to_params`)."""
    from faceanon.container import Geometry

    box_centre, box_side = _box_frame(box)
    roll = turn * math.pi / 2 + float(x[3])
    along, down = (
        np.array([math.cos(roll), math.sin(roll)]),
        np.array([-math.sin(roll), math.cos(roll)]),
    )
    centre = box_centre + box_side * (x[0] * along + x[1] * down)
    scale = size / (box_side * math.exp(float(x[2])))
    cos, sin = scale * along
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([size / 2, size / 2]) - linear @ centre
    alignment = Alignment(np.hstack([linear, offset[:, None]]), size)
    radii = np.maximum(x[4:], 0.0) * size
    polygon = np.array([size / 2, size / 2]) + radii[:, None] * _ray_directions()
    return Geometry(alignment, LandmarkMask(polygon, size))


# --- 36 numbers <-> 64-bit integers, and the keystream ------------------------------------


def to_uniform(w: float) -> int:
    """A standard normal value -> a 64-bit integer, uniform for normal inputs. Tails are
    computed with erfc (no cancellation); beyond |w| ~ 7 the 64-bit grid rounds visibly."""
    w = min(max(w, -W_LIMIT), W_LIMIT)
    tail = 0.5 * math.erfc(abs(w) / math.sqrt(2))  # P(N > |w|)
    low = min(int(tail * _TWO64), _TWO64 // 2 - 1)
    return low if w <= 0 else _TWO64 - 1 - low


def from_uniform(u: int) -> float:
    """The inverse of :func:`to_uniform` (up to its 64-bit rounding), clipped to +-W_LIMIT."""
    if u < _TWO64 // 2:
        w = _NORMAL.inv_cdf((u + 0.5) / _TWO64)
    else:
        w = -_NORMAL.inv_cdf((_TWO64 - u - 0.5) / _TWO64)
    return min(max(w, -W_LIMIT), W_LIMIT)


def _keystream(key: SecretKey, nonce: bytes, face: int) -> list[int]:
    fields = (b"faceanon/geometry/v3", key.material, nonce, struct.pack(">I", face))
    message = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    stream = hashlib.shake_256(message).digest(8 * PARAMS)
    return list(struct.unpack(f">{PARAMS}Q", stream))


def seal_face(
    key: SecretKey,
    nonce: bytes,
    face: int,
    geometry: Geometry,
    box: Box,
    prior: GeometryPrior | None = None,
) -> tuple[bytes, int, Geometry]:
    """(ciphertext, public quarter turn, the geometry as it will decode). Anonymize with the
    decoded geometry: it differs from ``geometry`` only by the encoding's rounding."""
    prior = prior or default_prior()
    turn = quarter_turn(geometry)
    w = prior.whiten(to_params(geometry, box))
    ints = [to_uniform(float(v)) for v in w]
    stream = _keystream(key, nonce, face)
    blob = struct.pack(
        f">{PARAMS}Q", *((i + k) % _TWO64 for i, k in zip(ints, stream, strict=True))
    )
    decoded = open_face(key, nonce, face, blob, box, turn, geometry.alignment.size, prior)
    return blob, turn, decoded


def open_face(
    key: SecretKey,
    nonce: bytes,
    face: int,
    blob: bytes,
    box: Box,
    turn: int,
    size: int,
    prior: GeometryPrior | None = None,
) -> Geometry:
    """The geometry under ``key``: the original with the right key, a prior draw otherwise."""
    prior = prior or default_prior()
    if len(blob) != 8 * PARAMS:
        raise ValueError(f"sealed face geometry must be {8 * PARAMS} bytes")
    stream = _keystream(key, nonce, face)
    ints = [
        (c - k) % _TWO64 for c, k in zip(struct.unpack(f">{PARAMS}Q", blob), stream, strict=True)
    ]
    w = np.array([from_uniform(i) for i in ints])
    return from_params(prior.color(w), box, turn, size)
