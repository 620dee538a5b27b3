"""The face polygon, hidden under the key without a key oracle (metadata format 3).

What must not happen: that a candidate key can be checked against a file. An authenticated
cipher (format 2) fails loudly on a wrong key, so one anonymized photo let anyone test
passphrase guesses offline at the cost of one scrypt each. And whatever the key hides must not
be checkable against what the image shows: the crop's alignment (centre, side, roll) follows
the face's pose, which the anonymized face keeps, so a hidden alignment could be checked by
finding the landmarks of the anonymized face. The alignment therefore travels in the clear
(container.py) and only the face polygon (the jaw line and raised brows in the aligned crop:
the face's own outline) is hidden, in an encoding that *every* key opens into a plausible
polygon (the idea of honey encryption, Juels and Ristenpart 2014):

1. the polygon as 32 radii from the crop centre, in crop sides;
2. projected on the 12 principal components of a Gaussian prior fitted on real faces and
   divided by their standard deviations, so that the 12 numbers ``w`` are independent
   standard normals for real faces (the components left out hold 0.3% of the variance, about
   a pixel at 256 px, and they are where real photos differ most from any fitted prior);
3. each ``w_j`` mapped to a 64-bit integer through the normal distribution function (uniform
   for real faces) and added modulo 2^64 to a SHAKE-256 keystream of (key, seal nonce, face).

Opening with any key reverses the three steps. With the right key the polygon comes back as
projected (the anonymization itself uses the decoded polygon, so the restore is exact); with a
wrong key the integers are uniform, so the polygon is a random draw from the prior. What
remains for an attacker is statistical: how far the prior is from the faces of a given photo
collection (measured by ``benchmarks/geometry_oracle.py``).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from faceanon.faces.masks import LandmarkMask, Mask

if TYPE_CHECKING:
    from faceanon.secure.keys import SecretKey

RAYS = 32
PARAMS = 12  # hidden numbers per face: the polygon's 12 principal components
W_LIMIT = 9.0  # whitened values are clipped here: a prior draw never exceeds it
_TWO64 = 1 << 64
_NORMAL = NormalDist()
PRIOR_FILE = "geometry_prior.json"


@dataclass(frozen=True, eq=False)
class GeometryPrior:
    """A Gaussian over the 32 polygon radii, kept to its 12 principal components: the mean and
    ``basis`` (32, 12), the components scaled by their standard deviations. A polygon is
    ``mean + basis @ w`` with ``w`` standard normal for real faces."""

    mean: np.ndarray  # (RAYS,)
    basis: np.ndarray  # (RAYS, PARAMS), orthogonal columns

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """The coordinates of ``x`` in the basis (its projection: the rest is dropped)."""
        scale = (self.basis**2).sum(axis=0)
        return np.asarray(self.basis.T @ (x - self.mean) / scale)

    def color(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self.mean + self.basis @ w)


@lru_cache(maxsize=1)
def default_prior() -> GeometryPrior:
    """The prior shipped with faceanon (``faceanon/data/geometry_prior.json``)."""
    text = resources.files("faceanon.data").joinpath(PRIOR_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    mean = np.array(data["mean"], dtype=np.float64)
    basis = np.array(data["basis"], dtype=np.float64)
    if mean.shape != (RAYS,) or basis.shape != (RAYS, PARAMS):
        raise ValueError(f"{PRIOR_FILE}: wrong shapes")
    return GeometryPrior(mean, basis)


# --- polygon <-> 32 radii --------------------------------------------------------------


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
    hit = (np.abs(denom) > 1e-12) & (u >= -1e-9) & (u <= 1 + 1e-9) & (t >= 0)
    return np.asarray(np.where(hit, t, 0.0).max(axis=1))


def to_params(mask: LandmarkMask) -> np.ndarray:
    """The 32 radii of a face polygon, from the crop centre, in crop sides."""
    centre = np.array([mask.size / 2, mask.size / 2])
    return polar_radii(mask.polygon, centre) / mask.size


def from_params(x: np.ndarray, size: int) -> LandmarkMask:
    """The polygon that 32 radii describe (the inverse of :func:`to_params`)."""
    radii = np.maximum(x, 0.0) * size
    polygon = np.array([size / 2, size / 2]) + radii[:, None] * _ray_directions()
    return LandmarkMask(polygon, size)


# --- components <-> 64-bit integers, and the keystream -------------------------------------


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
    from faceanon.secure.keys import keyed_stream

    fields = (nonce, struct.pack(">I", face))
    stream = keyed_stream(b"faceanon/geometry/v3", key, fields, 8 * PARAMS)
    return list(struct.unpack(f">{PARAMS}Q", stream))


def seal_face(
    key: SecretKey, nonce: bytes, face: int, mask: Mask, prior: GeometryPrior | None = None
) -> tuple[bytes, LandmarkMask]:
    """(ciphertext, the polygon as it will decode). Anonymize with the decoded polygon: it
    differs from ``mask`` by the 32-ray resampling and the 12-component projection (a pixel
    or two at 256 px) and the encoding's rounding."""
    if not isinstance(mask, LandmarkMask):
        raise ValueError("only polygon masks are sealed")
    prior = prior or default_prior()
    w = prior.whiten(to_params(mask))
    ints = [to_uniform(float(v)) for v in w]
    stream = _keystream(key, nonce, face)
    sealed = ((i + k) % _TWO64 for i, k in zip(ints, stream, strict=True))
    blob = struct.pack(f">{PARAMS}Q", *sealed)
    return blob, open_face(key, nonce, face, blob, mask.size, prior)


def open_face(
    key: SecretKey,
    nonce: bytes,
    face: int,
    blob: bytes,
    size: int,
    prior: GeometryPrior | None = None,
) -> LandmarkMask:
    """The polygon under ``key``: the original with the right key, a prior draw otherwise."""
    prior = prior or default_prior()
    if len(blob) != 8 * PARAMS:
        raise ValueError(f"sealed face polygon must be {8 * PARAMS} bytes")
    stream = _keystream(key, nonce, face)
    cipher = struct.unpack(f">{PARAMS}Q", blob)
    ints = [(c - k) % _TWO64 for c, k in zip(cipher, stream, strict=True)]
    return from_params(prior.color(np.array([from_uniform(i) for i in ints])), size)
