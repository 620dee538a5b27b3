"""``face-prior``: the embedded face model, a diffusion backbone whose noise predictor is exact.

The data model lives in the 3 x 64 x 64 latent space of 256-px aligned crops (the latent is the
crop's 4x4 area mean, so the model is a drop-in for the 256-px pipeline), written in the
orthonormal 2-D DCT of each channel, split into the low frequencies L (32 x 32 per channel,
3,072 coordinates) and the rest H (9,216):

    x = mu + B_L (U c + r_L) + B_H h,   c ~ sum_k pi_k N(m_k, S_k),
    r_L ~ N(0, s2 (I - U U^T)),   h ~ N(0, diag(lambda))

with U the d principal components of the low frequencies (fitted on the crops and their mirror
images), a K-component full-covariance Gaussian mixture on the PCA coefficients, an isotropic
residual inside L and independent high frequencies with their own variances (a white residual
over all frequencies would draw faces covered in pixel noise). The DCT being orthonormal, the
diffusion noise stays white in it, and for z_t = sqrt(a) x + sqrt(1 - a) n with
y = U^T (z_t - sqrt(a) mu)_L and S_k = V_k diag(l_k) V_k^T:

    E[n | z_t]_L = U sum_k w_k(y) V_k diag(sqrt(1-a) / (a l_k + 1 - a)) V_k^T (y - sqrt(a) m_k)
                   + sqrt(1-a) / (a s2 + 1 - a) (I - U U^T)(z_t - sqrt(a) mu)_L,
    E[n | z_t]_H = sqrt(1-a) / (a lambda + 1 - a) (z_t - sqrt(a) mu)_H,

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
LOW_SIDE = 32  # low frequencies: DCT indices (u, v) < 32 in each channel
FORMAT = 1


def _dct_matrix(n: int = GRID) -> np.ndarray:
    """Orthonormal DCT-II: coefficients = C @ signal."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (i + 0.5) * k / n)
    c[0] /= np.sqrt(2.0)
    return c


DCT = _dct_matrix()
_LOW = np.zeros((3, GRID, GRID), bool)
_LOW[:, :LOW_SIDE, :LOW_SIDE] = True
LOW = np.flatnonzero(_LOW)  # indices of L in the flattened (3, 64, 64) DCT coefficients
HIGH = np.flatnonzero(~_LOW)


def dct2(x: np.ndarray) -> np.ndarray:
    """Flattened (N, 3*64*64) latents -> flattened DCT coefficients (per channel, 2-D)."""
    grid = x.reshape(len(x), 3, GRID, GRID)
    return np.asarray((DCT @ grid @ DCT.T).reshape(len(x), DIM))


def idct2(c: np.ndarray) -> np.ndarray:
    grid = c.reshape(len(c), 3, GRID, GRID)
    return np.asarray((DCT.T @ grid @ DCT).reshape(len(c), DIM))


def mirror(x: np.ndarray) -> np.ndarray:
    """Flattened (N, 3*64*64) latents mirrored left-right."""
    return np.ascontiguousarray(x.reshape(len(x), 3, GRID, GRID)[..., ::-1].reshape(len(x), -1))


@dataclass(frozen=True, eq=False)
class FacePrior:
    """The model's numbers (numpy, float64). ``basis`` holds the components as low-frequency
    DCT coefficients; ``weights``/``means``/``chols`` are the mixture in whitened PCA
    coefficients (coefficient / sqrt(variance)), empty before the mixture is fit."""

    mean: np.ndarray  # (D,) pixels
    basis: np.ndarray  # (d, |L|) orthonormal rows
    variances: np.ndarray  # (d,)
    residual: float  # s2, per coordinate of L outside the components
    high: np.ndarray  # (|H|,) variances of the high frequencies
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    chols: np.ndarray  # (K, d, d) lower triangular

    @classmethod
    def from_parts(
        cls,
        mean: np.ndarray,
        basis: np.ndarray,
        variances: np.ndarray,
        residual: float,
        high: np.ndarray,
    ) -> FacePrior:
        d = len(basis)
        empty = (np.ones(0), np.zeros((0, d)), np.zeros((0, d, d)))
        return cls(mean, basis, variances, residual, high, *empty)

    def with_mixture(self, weights: np.ndarray, means: np.ndarray, chols: np.ndarray) -> FacePrior:
        return replace(self, weights=weights, means=means, chols=chols)

    @property
    def components(self) -> int:
        return len(self.basis)

    def pixel_basis(self) -> np.ndarray:
        """(D, d) orthonormal columns: the components as latents."""
        full = np.zeros((self.components, DIM))
        full[:, LOW] = self.basis
        return idct2(full).T

    def project(self, centred: np.ndarray) -> np.ndarray:
        """PCA coefficients (N, d) of centred flattened latents (N, D)."""
        return np.asarray(dct2(centred)[:, LOW] @ self.basis.T)

    def mean_residual(self) -> float:
        """Average variance per coordinate outside the components (L residual and H)."""
        rest = (len(LOW) - self.components) * self.residual + float(self.high.sum())
        return rest / (DIM - self.components)

    def log_likelihood(self, latents: np.ndarray) -> np.ndarray:
        """log p(x) per latent (N, 3, 64, 64), in nats."""
        from faceanon.fit_prior import _logsumexp, gmm_log_densities

        x = dct2(latents.reshape(len(latents), -1).astype(np.float64) - self.mean)
        low, high = x[:, LOW], x[:, HIGH]
        c = low @ self.basis.T
        r2 = ((low - c @ self.basis) ** 2).sum(axis=1)
        z = c / np.sqrt(self.variances)
        mix = _logsumexp(gmm_log_densities(z, self.weights, self.means, self.chols))
        mix -= 0.5 * np.log(self.variances).sum()  # whitening's Jacobian
        rest = len(LOW) - self.components
        residual = -0.5 * (rest * np.log(2 * np.pi * self.residual) + r2 / self.residual)
        h = -0.5 * (np.log(2 * np.pi * self.high).sum() + (high**2 / self.high).sum(axis=1))
        return np.asarray(mix + residual + h)

    # -- files ------------------------------------------------------------------------------

    def to_bytes(self, note: str = "") -> bytes:
        """A compressed .npz: the big arrays in float16 (Cholesky factors as lower triangles).
        Same model, same bytes (zip entries carry a fixed date)."""
        import io

        rows, cols = np.tril_indices(self.components)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format=np.array(FORMAT),
            mean=self.mean.astype(np.float32),
            basis=self.basis.astype(np.float16),
            variances=self.variances.astype(np.float32),
            residual=np.array(self.residual, np.float64),
            high=self.high.astype(np.float32),
            weights=self.weights.astype(np.float64),
            means=self.means.astype(np.float32),
            chols=self.chols[:, rows, cols].astype(np.float16),
            note=np.array(note),
        )
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> FacePrior:
        """Read and check a model file; one clear line if it is not one. The float16 basis is
        made orthonormal again (QR, deterministic)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ModelUnavailableError(f"{path}: not a face-prior model file ({exc})") from None
        need = ("format", "mean", "basis", "variances", "residual", "high", "weights", "means")
        missing = [n for n in (*need, "chols") if n not in arrays]
        if missing:
            raise ModelUnavailableError(f"{path}: not a face-prior model file (no {missing[0]})")
        if arrays["format"].shape != () or int(arrays["format"]) != FORMAT:
            raise ModelUnavailableError(f"{path}: face-prior format {arrays['format']} unknown")
        d, k = len(arrays["basis"]), len(arrays["weights"])
        rows, cols = np.tril_indices(d)
        shapes = {
            "mean": (DIM,),
            "basis": (d, len(LOW)),
            "variances": (d,),
            "residual": (),
            "high": (len(HIGH),),
            "weights": (k,),
            "means": (k, d),
            "chols": (k, len(rows)),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ModelUnavailableError(
                    f"{path}: face-prior array {name} has shape {arrays[name].shape}, "
                    f"expected {shape}"
                )
        if not 1 <= d < len(LOW) or k < 1:
            raise ModelUnavailableError(f"{path}: face-prior model file has invalid sizes")
        values = {n: arrays[n].astype(np.float64) for n in shapes}
        if not all(np.isfinite(v).all() for v in values.values()):
            raise ModelUnavailableError(f"{path}: face-prior model file has invalid values")
        chols = np.zeros((k, d, d))
        chols[:, rows, cols] = values["chols"]
        q, r = np.linalg.qr(values["basis"].T)
        basis = (q * np.sign(np.diag(r))).T
        prior = cls(
            values["mean"],
            basis,
            values["variances"],
            float(values["residual"]),
            values["high"],
            values["weights"],
            values["means"],
            chols,
        )
        if not (
            prior.residual > 0
            and (prior.variances > 0).all()
            and (prior.high > 0).all()
            and (prior.weights > 0).all()
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

        self._u = put(prior.pixel_basis())  # (D, d)
        self._basis_low = put(prior.basis.T)  # (|L|, d)
        self._dct = put(DCT)
        self._low = torch.from_numpy(LOW).to(self.device)
        self._high = torch.from_numpy(HIGH).to(self.device)
        self._lambda = put(prior.high)
        self._mu = put(prior.mean)
        self._v = put(vectors)  # (K, d, d), columns are eigenvectors
        self._l = put(np.maximum(values, 1e-8))  # (K, d)
        self._m = put(prior.means * std)  # (K, d)
        self._s = put(covs)  # (K, d, d) component covariances of the PCA coefficients
        self._grams: dict[bytes, torch.Tensor] = {}
        self._logpi = put(np.log(prior.weights / prior.weights.sum()))
        self._s2 = float(prior.residual)
        # Outside a mask the residual is taken isotropic with the same total variance (the
        # masked prediction must ignore the inside; it need not be the exact marginal).
        self._s2_out = prior.mean_residual()

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
        E[n | z_t]; outside, E[n_out | z_t,out] under the marginal of the outside of the model
        with its residual made isotropic (same total variance), which does not look at the
        inside. So the outside's trajectory depends on the outside alone: the same when
        inverting the original and the anonymized face, and re-injection puts back what the
        sampling step computed. This is what makes the anonymization exactly invertible with a
        model whose components span the whole crop (METHOD §7)."""
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
        beta = a * self._s2_out + 1.0 - a
        w = z.reshape(-1).to(self.device, torch.float64)[outside] - math.sqrt(a) * self._mu[outside]
        p = u_o.T @ w  # (d,)
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        m = a * (self._s - self._s2_out * eye)  # (K, d, d)
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
        inside = torch.einsum("bke,kde->bd", w[..., None] * scaled, self._v)  # (B, d)
        grid = r.reshape(len(r), 3, GRID, GRID)
        coeffs = (self._dct @ grid @ self._dct.T).reshape(len(r), DIM)
        out = torch.empty_like(coeffs)
        low = coeffs[:, self._low]
        beta = 1.0 / (a * self._s2 + 1.0 - a)
        out[:, self._low] = beta * (low - y @ self._basis_low.T) + inside @ self._basis_low.T
        out[:, self._high] = coeffs[:, self._high] / (a * self._lambda + 1.0 - a)
        grid = out.reshape(len(r), 3, GRID, GRID)
        pixels = self._dct.T @ grid @ self._dct
        return (math.sqrt(1.0 - a) * pixels).reshape(latents.shape).to(latents.dtype)


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
    noise = rng.standard_normal((count, len(LOW)))
    low = (white * np.sqrt(prior.variances)) @ prior.basis
    low += math.sqrt(prior.residual) * (noise - (noise @ prior.basis.T) @ prior.basis)
    coeffs = np.zeros((count, DIM))
    coeffs[:, LOW] = low
    coeffs[:, HIGH] = np.sqrt(prior.high) * rng.standard_normal((count, len(HIGH)))
    return np.asarray((prior.mean + idct2(coeffs)).reshape(count, 3, GRID, GRID))
