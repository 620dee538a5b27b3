"""``face-net``: the embedded face model with a learned noise predictor (issue 26).

Same latent as ``face-prior`` (the 4x4 area mean of a 256-px aligned crop, 3 x 64 x 64) and the
same orthonormal coordinates X = DCT(colour(z - mu)): each principal colour channel's 2-D DCT.
The coordinates are split in two:

* the **learned block** S, the low frequencies of each channel (luminance u, v < 24, the two
  chroma channels u, v < 12: 864 coordinates), whose noise prediction is a residual MLP with a
  noise-level embedding, added to the exact prediction of a diagonal Gaussian with the data's
  variances (the network learns the correction, so it starts as a sensible model);
* the **rest**, every other coordinate, an independent Gaussian with its own measured variance
  v_j (no floor to speak of: 1e-5): its noise prediction is exact and closed form,
  sqrt(1 - a) X_j / (a v_j + 1 - a). So the fine detail of a new face has the spectrum and the
  colours of real faces, and the chroma channels carry no speckle.

Outside a mask (what keyflip needs for an exact round trip, see ``face_prior.masked_eps``), the
prediction is that of a Gaussian surrogate that looks at the outside alone: the data's full
covariance over a smaller low-frequency block S0 (luminance 16 x 16, chroma 8 x 8) plus an
isotropic rest, marginalised on the outside cells (Woodbury, cached per mask and level).

Decode: ``face_prior.upsample`` (bicubic, consistent with the area downsample).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceanon.backbones.face_prior import (
    DCT,
    DIM,
    GRID,
    DctLatent,
    OutsidePredictor,
    embedded_file,
    idct2,
)
from faceanon.diffusion.schedule import NoiseSchedule
from faceanon.errors import ModelUnavailableError

FORMAT = 1
NAME = "face-net"


def block_indices(luma: int, chroma: int) -> np.ndarray:
    """Flattened (3, 64, 64) coordinate indices of the low frequencies: u, v < ``luma`` in the
    first (luminance) channel, u, v < ``chroma`` in the other two."""
    inside = np.zeros((3, GRID, GRID), bool)
    inside[0, :luma, :luma] = True
    inside[1:, :chroma, :chroma] = True
    return np.flatnonzero(inside)


@dataclass(frozen=True)
class Architecture:
    luma: int = 24  # learned block: luminance frequencies u, v < luma
    chroma: int = 12  # ... and chroma frequencies u, v < chroma
    width: int = 768
    blocks: int = 4
    surrogate_luma: int = 16  # the outside's Gaussian surrogate block
    surrogate_chroma: int = 8

    @property
    def learned(self) -> np.ndarray:
        return block_indices(self.luma, self.chroma)

    @property
    def surrogate(self) -> np.ndarray:
        return block_indices(self.surrogate_luma, self.surrogate_chroma)

    def check(self) -> None:
        if not (
            1 <= self.surrogate_luma <= self.luma <= GRID
            and 1 <= self.surrogate_chroma <= self.chroma <= GRID
            and 8 <= self.width <= 4096
            and 1 <= self.blocks <= 16
        ):
            raise ValueError(f"invalid architecture {self}")


def level_features(a: torch.Tensor, count: int = 16) -> torch.Tensor:
    """Sinusoidal features (B, 2 * count) of the log signal-to-noise ratio log(a / (1 - a))."""
    snr = torch.log(a) - torch.log1p(-a)
    freqs = torch.exp(torch.linspace(math.log(0.02), math.log(2.0), count, dtype=a.dtype))
    angles = snr[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.level = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = h + self.outer(F.silu(self.inner(self.norm(h)) + self.level(level)))
        return out


class Denoiser(nn.Module):
    """The correction to the diagonal Gaussian's noise prediction in the learned block, from
    the block's coordinates scaled to unit variance and the noise level."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        n, w = len(arch.learned), arch.width
        self.embed = nn.Sequential(nn.Linear(32, w), nn.SiLU(), nn.Linear(w, w))
        self.inp = nn.Linear(n, w)
        self.blocks = nn.ModuleList([Block(w) for _ in range(arch.blocks)])
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, n)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        level = self.embed(level_features(a))
        h = self.inp(u) + level
        level = F.silu(level)
        for block in self.blocks:
            h = block(h, level)
        return self.out(self.norm(h))  # type: ignore[no-any-return]


def gaussian_eps(x: torch.Tensor, variances: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Exact E[n | x_t] of independent zero-mean Gaussians (B, n) with these variances at
    alpha-bar ``a`` (B,)."""
    a = a[:, None]
    return torch.sqrt(1.0 - a) * x / (a * variances[None] + 1.0 - a)


def predict(net: Denoiser, x: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps of the learned block (B, |S|) from its noisy coordinates ``x`` at alpha-bar ``a``
    (B,): the diagonal Gaussian's exact prediction (variances ``v``) plus the network's
    correction, the network fed the coordinates scaled to unit variance, in float32."""
    scale = torch.sqrt(a[:, None] * v[None] + 1.0 - a[:, None])
    correction: torch.Tensor = net((x / scale).float(), a.float())
    return gaussian_eps(x, v, a) + correction.to(x.dtype)


def white_noise(floor: tuple[float, float]) -> np.ndarray:
    """(D,) variance per coordinate of the white noise the model adds to faces (luma, chroma).
    Without it, a coordinate of tiny variance makes the inversion amplify the rounding and
    clipping of the 8-bit image by about 1 / sqrt(variance), and the key's change of z_T
    spreads that error over the face (docs/benchmarks.md, "face-net")."""
    return np.repeat(np.array([floor[0], floor[1], floor[1]]), GRID * GRID)


@dataclass(eq=False)
class FaceNet:
    """The model: statistics (float64 numpy) and the denoiser network (float32)."""

    arch: Architecture
    mean: np.ndarray  # (D,) latent pixels
    colour: np.ndarray  # (3, 3) orthonormal rows
    variances: np.ndarray  # (D,) variance of every coordinate X_j
    surrogate_cov: np.ndarray  # (|S0|, |S0|) covariance of the surrogate block
    net: Denoiser
    note: str = ""
    floor: tuple[float, float] = (1e-2, 1e-3)  # variance of the white noise (luma, chroma)

    @property
    def noise(self) -> np.ndarray:
        """(D,) the white noise the model's data carry beside the faces (:func:`white_noise`)."""
        return white_noise(self.floor)

    @property
    def model_variances(self) -> np.ndarray:
        return np.asarray(self.variances + self.noise)

    def learned_eps(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """eps of the learned block (B, |S|) from its noisy coordinates (B, |S|)."""
        v = torch.as_tensor(self.model_variances[self.arch.learned], dtype=x.dtype)
        return predict(self.net, x, a, v)

    # -- files ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A safetensors file: the network in float16, the statistics in float32/64."""
        from safetensors.torch import save

        tensors = {
            f"net.{k}": v.detach().half().contiguous() for k, v in self.net.state_dict().items()
        }
        tensors |= {
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean, np.float32)),
            "colour": torch.from_numpy(np.ascontiguousarray(self.colour, np.float64)),
            "variances": torch.from_numpy(np.ascontiguousarray(self.variances, np.float32)),
            "surrogate_cov": torch.from_numpy(np.ascontiguousarray(self.surrogate_cov, np.float32)),
        }
        # One metadata entry: safetensors writes several in an arbitrary order.
        meta = {
            "format": FORMAT,
            "model": NAME,
            "architecture": self.arch.__dict__,
            "floor": list(self.floor),
            "note": self.note,
        }
        return bytes(save(tensors, metadata={"faceanon": json.dumps(meta, sort_keys=True)}))

    @classmethod
    def load(cls, path: Path) -> FaceNet:
        """Read and check a model file; one clear line if it is not one."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        def refuse(why: str) -> ModelUnavailableError:
            return ModelUnavailableError(f"{path}: not a usable {NAME} model file ({why})")

        try:
            data = path.read_bytes()
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
        except (OSError, ValueError, SafetensorError, UnicodeDecodeError) as exc:
            raise refuse(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        try:
            meta = json.loads((header.get("__metadata__") or {})["faceanon"])
            assert isinstance(meta, dict)
        except (KeyError, TypeError, ValueError, AssertionError):
            raise refuse("no face-net metadata") from None
        if meta.get("model") != NAME:
            raise refuse("no face-net metadata")
        if meta.get("format") != FORMAT:
            raise refuse(f"format {meta.get('format')!r} unknown")
        try:
            arch = Architecture(**{k: int(v) for k, v in meta["architecture"].items()})
            arch.check()
        except (KeyError, TypeError, ValueError) as exc:
            raise refuse(f"bad architecture: {exc}") from None
        s0 = len(arch.surrogate)
        shapes = {"mean": (DIM,), "colour": (3, 3), "variances": (DIM,), "surrogate_cov": (s0, s0)}
        for name, shape in shapes.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                raise refuse(f"array {name} missing or not of shape {shape}")
        stats = {n: tensors[n].double().numpy() for n in shapes}
        if not all(np.isfinite(v).all() for v in stats.values()):
            raise refuse("non-finite statistics")
        if not np.allclose(stats["colour"] @ stats["colour"].T, np.eye(3), atol=1e-6):
            raise refuse("colour matrix not orthonormal")
        if not (stats["variances"] > 0).all():
            raise refuse("non-positive variances")
        if np.linalg.eigvalsh(stats["surrogate_cov"]).min() <= 0:
            raise refuse("surrogate covariance not positive definite")
        try:
            floor = tuple(float(f) for f in meta["floor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise refuse(f"bad noise floor: {exc}") from None
        if len(floor) != 2 or not all(0 < f < 1 for f in floor):
            raise refuse(f"bad noise floor {floor}")
        net = Denoiser(arch)
        state = {k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise refuse(f"network weights do not fit: {str(exc).splitlines()[0]}") from None
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise refuse("non-finite network weights")
        net.eval()
        return cls(
            arch,
            stats["mean"],
            stats["colour"],
            stats["variances"],
            stats["surrogate_cov"],
            net,
            str(meta.get("note", "")),
            (floor[0], floor[1]),
        )


def default_model_file() -> Path:
    from importlib.resources import files

    return Path(str(files("faceanon") / "data" / "face_net.safetensors"))


class FaceNetBackbone(DctLatent):
    """The backbone of a :class:`FaceNet` (module docstring)."""

    def __init__(
        self,
        model: FaceNet,
        name: str = NAME,
        revision: str | None = None,
        schedule: NoiseSchedule | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        from faceanon.backbones.closed_form import reference_schedule

        self.model, self.name, self.revision = model, name, revision
        self.schedule = schedule or reference_schedule()
        self.device = torch.device(device)
        model.net.to(self.device)

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, torch.float64)

        self._mu = put(model.mean)
        self._dct = put(DCT)
        self._colour = put(model.colour)
        self._v = put(model.model_variances)  # the faces' variances plus the white noise
        self._learned = torch.from_numpy(model.arch.learned).to(self.device)
        # The outside's surrogate: C = iso I + W (Sigma0 - iso I) W^T over the latent pixels,
        # W the pixel-space basis vectors of the surrogate block (orthonormal columns). C is
        # positive definite whatever the sign of Sigma0 - iso I, and only solves are needed.
        surrogate = model.arch.surrogate
        rest = np.ones(DIM, bool)
        rest[surrogate] = False
        sigma0 = model.surrogate_cov + np.diag(model.noise[surrogate])
        iso = float(model.model_variances[rest].mean())
        basis = np.zeros((len(surrogate), DIM))
        basis[np.arange(len(surrogate)), surrogate] = 1.0
        self._outside = OutsidePredictor(
            self._mu,
            put(idct2(basis, model.colour).T),  # (D, |S0|)
            put((sigma0 - iso * np.eye(len(sigma0)))[None]),  # one component
            torch.zeros((1, len(surrogate)), dtype=torch.float64, device=self.device),
            torch.zeros(1, dtype=torch.float64, device=self.device),
            iso,
        )

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        a = float(self.schedule.alphas_cumprod[timestep])
        z = latents.reshape(len(latents), -1).to(self.device, torch.float64)
        x = self._dct2(z - math.sqrt(a) * self._mu)
        level = torch.full((len(x),), a, dtype=torch.float64, device=self.device)
        out = gaussian_eps(x, self._v, level)
        with torch.inference_mode():
            out[:, self._learned] = self.model.learned_eps(x[:, self._learned], level)
        return self._idct2(out).reshape(latents.shape).to(latents.dtype)

    def masked_eps(self, latents: torch.Tensor, timestep: int, mask: torch.Tensor) -> torch.Tensor:
        """Inside ``mask`` (bool, (B, 1, h, w)) the model's prediction; outside, the Gaussian
        surrogate's given the outside alone (so the outside's trajectory depends on the
        outside only, and the keyed map inverts exactly; ``FacePriorBackbone.masked_eps``)."""
        full = self.eps(latents, timestep)
        a = float(self.schedule.alphas_cumprod[timestep])
        outside = self._outside(latents, mask, timestep, a).to(full.dtype)
        return torch.where(mask.to(latents.device).expand_as(latents), full, outside)


def load_face_net(path: Path | None = None, device: str | torch.device = "cpu") -> FaceNetBackbone:
    """The shipped model (``faceanon/data/face_net.safetensors``) or a file of ``fit-net``."""
    file, revision = embedded_file(path, default_model_file(), NAME, "fit-net")
    return FaceNetBackbone(FaceNet.load(file), revision=revision, device=device)
