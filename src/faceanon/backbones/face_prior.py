"""``face-prior``: the embedded face model, a diffusion backbone whose noise predictor is exact.

The data model, in the 3 x 64 x 64 latent space of 256-px aligned crops (the latent is the
crop's 4x4 area mean, so the model is a drop-in for the 256-px pipeline):

    x = mu + U c + r,    c ~ sum_k pi_k N(m_k, S_k),    r ~ N(0, s2 (I - U U^T))

with U the d principal components of aligned face crops (symmetric or antisymmetric under the
mirror, stored as half images), a K-component full-covariance Gaussian mixture on the PCA
coefficients and an isotropic residual. For z_t = sqrt(a) x + sqrt(1 - a) n, write
y = U^T (z_t - sqrt(a) mu) and q = (I - U U^T)(z_t - sqrt(a) mu). With S_k = V_k diag(l_k) V_k^T,

    E[n | z_t] = U sum_k w_k(y) V_k diag(sqrt(1-a) / (a l_k + 1 - a)) V_k^T (y - sqrt(a) m_k)
                 + sqrt(1-a) / (a s2 + 1 - a) q,

    w_k(y) ∝ pi_k N(y; sqrt(a) m_k, V_k diag(a l_k + 1 - a) V_k^T)

(posterior component weights; per component the Wiener filter in its eigenbasis; the residual
shrunk). This is the minimum-MSE noise prediction, so DDIM integrates the model's exact
probability-flow ODE. Computed in float64.

Decode: bicubic 4x upsampling made consistent with the area downsample (one back-projection
of the residual, so ``encode(decode(z)) == z`` up to rounding): docs/benchmarks.md
"face-prior decoder" measures it against nearest, bilinear and plain bicubic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.diffusion.schedule import NoiseSchedule
from faceanon.errors import ModelUnavailableError

GRID = 64  # latent side
FACTOR = 4  # crop side / latent side
DIM = 3 * GRID * GRID
HALF = DIM // 2
FORMAT = 1


def mirror(x: np.ndarray) -> np.ndarray:
    """Flattened (N, 3*64*64) latents mirrored left-right."""
    return np.ascontiguousarray(x.reshape(len(x), 3, GRID, GRID)[..., ::-1].reshape(len(x), -1))


def _whole(half: np.ndarray, parity: np.ndarray) -> np.ndarray:
    """(d, D) unit components from their left halves and parities."""
    d = len(half)
    h = half.reshape(d, 3, GRID, GRID // 2)
    right = parity[:, None, None, None] * h[..., ::-1]
    return np.concatenate([h, right], axis=3).reshape(d, DIM) / math.sqrt(2.0)


@dataclass(frozen=True, eq=False)
class FacePrior:
    """The model's numbers (numpy, float64). ``weights``/``means``/``chols`` are the mixture in
    whitened PCA coefficients (coefficient / sqrt(variance)); empty before the mixture is fit."""

    mean: np.ndarray  # (D,)
    half: np.ndarray  # (d, D/2)
    parity: np.ndarray  # (d,) +1 / -1
    variances: np.ndarray  # (d,)
    residual: float
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    chols: np.ndarray  # (K, d, d) lower triangular

    @classmethod
    def from_parts(
        cls,
        mean: np.ndarray,
        half: np.ndarray,
        parity: np.ndarray,
        variances: np.ndarray,
        residual: float,
    ) -> FacePrior:
        d = len(half)
        return cls(
            mean,
            half,
            parity,
            variances,
            residual,
            np.ones(0),
            np.zeros((0, d)),
            np.zeros((0, d, d)),
        )

    def with_mixture(self, weights: np.ndarray, means: np.ndarray, chols: np.ndarray) -> FacePrior:
        return replace(self, weights=weights, means=means, chols=chols)

    @property
    def components(self) -> int:
        return len(self.half)

    def basis(self) -> np.ndarray:
        """(D, d) orthonormal columns."""
        return _whole(self.half, self.parity).T

    def project(self, centred: np.ndarray) -> np.ndarray:
        """PCA coefficients (N, d) of centred flattened latents (N, D)."""
        return np.asarray(centred @ self.basis())

    def log_likelihood(self, latents: np.ndarray) -> np.ndarray:
        """log p(x) per latent (N, 3, 64, 64), in nats."""
        from faceanon.fit_prior import _logsumexp, gmm_log_densities

        x = latents.reshape(len(latents), -1).astype(np.float64) - self.mean
        u = self.basis()
        c = x @ u
        r2 = ((x - c @ u.T) ** 2).sum(axis=1)
        z = c / np.sqrt(self.variances)
        mix = _logsumexp(gmm_log_densities(z, self.weights, self.means, self.chols))
        mix -= 0.5 * np.log(self.variances).sum()  # whitening's Jacobian
        rest = DIM - self.components
        return np.asarray(
            mix - 0.5 * (rest * np.log(2 * np.pi * self.residual) + r2 / self.residual)
        )

    # -- files ------------------------------------------------------------------------------

    def to_bytes(self, note: str = "") -> bytes:
        """A compressed .npz: the big arrays in float16 (Cholesky factors as lower triangles).
        Same model, same bytes (zip entries carry a fixed date)."""
        import io

        d = self.components
        rows, cols = np.tril_indices(d)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format=np.array(FORMAT),
            mean=self.mean.astype(np.float32),
            half=self.half.astype(np.float16),
            parity=self.parity.astype(np.int8),
            variances=self.variances.astype(np.float32),
            residual=np.array(self.residual, np.float64),
            weights=self.weights.astype(np.float64),
            means=self.means.astype(np.float32),
            chols=self.chols[:, rows, cols].astype(np.float16),
            note=np.array(note),
        )
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> FacePrior:
        """Read and check a model file; one clear line if it is not one."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ModelUnavailableError(f"{path}: not a face-prior model file ({exc})") from None
        need = ("format", "mean", "half", "parity", "variances", "residual", "weights", "means")
        missing = [n for n in (*need, "chols") if n not in arrays]
        if missing:
            raise ModelUnavailableError(f"{path}: not a face-prior model file (no {missing[0]})")
        if int(arrays["format"]) != FORMAT:
            raise ModelUnavailableError(f"{path}: face-prior format {arrays['format']} unknown")
        half = arrays["half"].astype(np.float64)
        d = len(half)
        k = len(arrays["weights"])
        rows, cols = np.tril_indices(d)
        shapes = {
            "mean": (DIM,),
            "half": (d, HALF),
            "parity": (d,),
            "variances": (d,),
            "means": (k, d),
            "chols": (k, len(rows)),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ModelUnavailableError(
                    f"{path}: face-prior array {name} has shape {arrays[name].shape}, "
                    f"expected {shape}"
                )
        chols = np.zeros((k, d, d))
        chols[:, rows, cols] = arrays["chols"].astype(np.float64)
        prior = cls(
            arrays["mean"].astype(np.float64),
            half,
            arrays["parity"].astype(np.float64),
            arrays["variances"].astype(np.float64),
            float(arrays["residual"]),
            arrays["weights"].astype(np.float64),
            arrays["means"].astype(np.float64),
            chols,
        )
        values = [prior.mean, half, prior.variances, prior.weights, prior.means, chols]
        if not all(np.isfinite(v).all() for v in values) or not (
            prior.residual > 0
            and (prior.variances > 0).all()
            and (prior.weights > 0).all()
            and set(np.unique(prior.parity)) <= {-1.0, 1.0}
            and (np.abs(np.diagonal(chols, axis1=1, axis2=2)) > 0).all()
        ):
            raise ModelUnavailableError(f"{path}: face-prior model file has invalid values")
        return prior


def default_model_file() -> Path:
    from importlib.resources import files

    return Path(str(files("faceanon") / "data" / "face_prior.npz"))


def upsample(z: torch.Tensor, mode: str = "bicubic-consistent") -> torch.Tensor:
    """4x upsampling of latents; ``bicubic-consistent`` adds back the area-downsampled
    residual so that the 4x4 means of the output equal the input."""
    if mode in ("nearest", "bilinear", "bicubic"):
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(z, scale_factor=FACTOR, mode=mode, **kwargs)
    if mode != "bicubic-consistent":
        raise ValueError(f"unknown upsampling {mode!r}")
    up = F.interpolate(z, scale_factor=FACTOR, mode="bicubic", align_corners=False)
    residual = z - F.avg_pool2d(up, FACTOR)
    return up + F.interpolate(residual, scale_factor=FACTOR, mode="nearest")


class FacePriorBackbone:
    """The exact-score backbone of a :class:`FacePrior` (module docstring)."""

    image_size = GRID * FACTOR
    latent_shape = (3, GRID, GRID)

    def __init__(
        self,
        prior: FacePrior,
        name: str = "face-prior",
        revision: str | None = None,
        schedule: NoiseSchedule | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        from faceanon.backbones.closed_form import reference_schedule

        if len(prior.weights) == 0:
            raise ValueError("the face prior has no mixture yet")
        self.prior, self.name, self.revision = prior, name, revision
        self.schedule = schedule or reference_schedule()
        self.device = torch.device(device)
        std = np.sqrt(prior.variances)
        # Each component in PCA coefficients: S_k = D L L^T D, D = diag(sd); eigenbasis.
        covs = std[None, :, None] * (prior.chols @ prior.chols.transpose(0, 2, 1)) * std[None, None]
        values, vectors = np.linalg.eigh(covs)

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, torch.float64)

        self._u = put(prior.basis())  # (D, d)
        self._mu = put(prior.mean)
        self._v = put(vectors)  # (K, d, d), columns are eigenvectors
        self._l = put(np.maximum(values, 1e-8))  # (K, d)
        self._m = put(prior.means * std)  # (K, d)
        self._s = put(covs)  # (K, d, d) component covariances of the PCA coefficients
        self._grams: dict[bytes, torch.Tensor] = {}
        self._logpi = put(np.log(prior.weights / prior.weights.sum()))
        self._s2 = float(prior.residual)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, FACTOR)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return upsample(latents)

    def posterior_weights(self, latents: torch.Tensor, a: float) -> torch.Tensor:
        """(B, K) component weights given z_t at alpha-bar ``a``."""
        return self._terms(latents, a)[0]

    def _terms(
        self, latents: torch.Tensor, a: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r = (
            latents.reshape(len(latents), -1).to(self.device, torch.float64)
            - math.sqrt(a) * self._mu
        )
        y = r @ self._u  # (B, d)
        diff = y[:, None, :] - math.sqrt(a) * self._m[None]  # (B, K, d)
        proj = torch.einsum("bkd,kde->bke", diff, self._v)
        var = a * self._l + (1.0 - a)  # (K, d)
        logw = self._logpi - 0.5 * (torch.log(var).sum(dim=1) + (proj**2 / var).sum(dim=2))
        return torch.softmax(logw, dim=1), proj / var, r, y

    def masked_eps(self, latents: torch.Tensor, timestep: int, mask: torch.Tensor) -> torch.Tensor:
        """The noise prediction keyflip uses: inside ``mask`` (bool, (B, 1, h, w)) the model's
        E[n | z_t]; outside, E[n_out | z_t,out] under the model's marginal of the outside, which
        does not look at the inside. So the outside's trajectory depends on the outside alone:
        the same when inverting the original and the anonymized face, and re-injection puts
        back what the sampling step computed. This is what makes the anonymization exactly
        invertible with a model whose components span the whole crop (METHOD §7)."""
        inside = mask.to(latents.device).expand_as(latents)
        full = self.eps(latents, timestep)
        outside = torch.stack(
            [
                self._outside_eps(z, timestep, ~m.reshape(-1))
                for z, m in zip(latents, inside, strict=True)
            ]
        ).reshape(latents.shape)
        return torch.where(inside, full, outside.to(full.dtype))

    def _outside_eps(self, z: torch.Tensor, timestep: int, outside: torch.Tensor) -> torch.Tensor:
        """E[n_o | z_o] for one latent, as a (D,) vector (zero inside).

        Per component z_o ~ N(sqrt(a)(mu_o + U_o m_k), U_o M_k U_o^T + beta I) with
        M_k = a (S_k - s2 I) and beta = a s2 + 1 - a; Woodbury with A_k = beta I + G M_k:
        C_k^{-1} v = (v - U_o M_k A_k^{-1} U_o^T v) / beta, log det C_k = log det A_k + const.
        """
        a = float(self.schedule.alphas_cumprod[timestep])
        outside = outside.to(self.device)
        key = _gram_key(outside)
        if key not in self._grams:
            if len(self._grams) > 64:
                self._grams.clear()
            u_o = self._u[outside]
            self._grams[key] = u_o.T @ u_o
        g = self._grams[key]
        u_o = self._u[outside]
        d = g.shape[0]
        beta = a * self._s2 + 1.0 - a
        w = z.reshape(-1).to(self.device, torch.float64)[outside] - math.sqrt(a) * self._mu[outside]
        p = u_o.T @ w  # (d,)
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        m = a * (self._s - self._s2 * eye)  # (K, d, d)
        big_a = beta * eye + g @ m
        gm = self._m @ g  # (K, d): G m_k (G symmetric)
        s_k = p[None] - math.sqrt(a) * gm  # U_o^T v_k
        q = torch.linalg.solve(big_a, s_k[..., None])[..., 0]  # (K, d)
        mq = torch.einsum("kij,kj->ki", m, q)  # M_k q_k
        norm2 = (w @ w) - 2 * math.sqrt(a) * (self._m @ p) + a * (gm * self._m).sum(dim=1)
        quad = (norm2 - (s_k * mq).sum(dim=1)) / beta
        logw = self._logpi - 0.5 * (torch.linalg.slogdet(big_a)[1] + quad)
        weights = torch.softmax(logw, dim=0)
        mixed = (weights[:, None] * (math.sqrt(a) * self._m + mq)).sum(dim=0)
        out = torch.zeros(DIM, dtype=torch.float64, device=self.device)
        out[outside] = math.sqrt(1.0 - a) / beta * (w - u_o @ mixed)
        return out

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        a = float(self.schedule.alphas_cumprod[timestep])
        w, scaled, r, y = self._terms(latents, a)
        inside = torch.einsum("bke,kde->bd", w[..., None] * scaled, self._v)
        beta = 1.0 / (a * self._s2 + 1.0 - a)
        out = math.sqrt(1.0 - a) * (beta * (r - y @ self._u.T) + inside @ self._u.T)
        return out.reshape(latents.shape).to(latents.dtype)


def _gram_key(outside: torch.Tensor) -> bytes:
    return bytes(np.packbits(outside.cpu().numpy()))


def load_face_prior(
    path: Path | None = None, device: str | torch.device = "cpu"
) -> FacePriorBackbone:
    """The shipped model (``faceanon/data/face_prior.npz``) or a file from ``fit-prior``."""
    import hashlib

    file = default_model_file() if path is None else Path(path)
    if not file.is_file():
        raise ModelUnavailableError(
            f"{file}: face-prior model file missing (rebuild it with `faceanon fit-prior`)"
        )
    revision = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    return FacePriorBackbone(FacePrior.load(file), revision=revision, device=device)


def sample_latents(prior: FacePrior, count: int, seed: int = 0) -> np.ndarray:
    """``count`` latents (count, 3, 64, 64) drawn from the model itself."""
    rng = np.random.default_rng(seed)
    k = rng.choice(len(prior.weights), size=count, p=prior.weights / prior.weights.sum())
    white = prior.means[k] + np.einsum(
        "nij,nj->ni", prior.chols[k], rng.standard_normal((count, prior.components))
    )
    u = prior.basis()
    noise = rng.standard_normal((count, DIM))
    residual = math.sqrt(prior.residual) * (noise - (noise @ u) @ u.T)
    x = prior.mean + (white * np.sqrt(prior.variances)) @ u.T + residual
    return np.asarray(x.reshape(count, 3, GRID, GRID))
