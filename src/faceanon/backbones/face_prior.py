"""``face-prior``: the embedded face model, a diffusion backbone whose noise predictor is exact.

The data model lives in the 3 x 64 x 64 latent space of 256-px aligned crops (the latent is the
crop's 4x4 area mean, so the model is a drop-in for the 256-px pipeline), in the orthonormal 2-D
DCT of each principal colour channel (the 3 x 3 colour PCA of the crops' pixels: luminance
first). In those coordinates X = DCT(x - mu):

    X = U c + r,   c ~ sum_k pi_k N(m_k, S_k),   r ~ N(0, diag(v))

a mixture of factor analysers with shared factors: U the d principal components of the low
frequencies L (32 x 32 per channel; fitted on the crops and their mirror images), a K-component
full-covariance Gaussian mixture on their coefficients, and an independent residual with one
variance per coordinate, v_j, measured on what the components leave (so the residual has the
spectrum and the colours of faces; a white residual draws faces covered in pixel noise). The
transform being orthonormal, the diffusion noise stays white, and at alpha-bar a:

    C_k = Lambda + U M_k U^T,   Lambda = a diag(v) + (1 - a) I,   M_k = a S_k,
    E[n | z_t] = sqrt(1 - a) sum_k w_k C_k^{-1} (X_t - sqrt(a) U m_k),
    w_k ∝ pi_k N(X_t; sqrt(a) U m_k, C_k),   X_t = DCT(z_t - sqrt(a) mu),

computed exactly with the Woodbury identity in d dimensions (:func:`mixture_posterior`). This
is the minimum-MSE noise prediction, so DDIM integrates the model's exact probability-flow ODE.
Float64 throughout.

Decode: bicubic 4x upsampling made consistent with the area downsample (one back-projection
of the residual, so ``encode(decode(z)) == z`` up to rounding): docs/benchmarks.md
"face-prior decoder" measures it against nearest, bilinear and plain bicubic.

One module: the basis, the mixture, its exact posterior and the backbone that runs them are
one model; their file format is theirs alone.
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
    return np.asarray(c)


DCT = _dct_matrix()
_LOW = np.zeros((3, GRID, GRID), bool)
_LOW[:, :LOW_SIDE, :LOW_SIDE] = True
LOW = np.flatnonzero(_LOW)  # indices of L in the flattened (3, 64, 64) DCT coefficients


def dct2(x: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray:
    """Flattened (N, 3*64*64) latents -> flattened coefficients: the channels mixed by the
    orthonormal ``colour`` matrix (if given), then each one's 2-D DCT."""
    grid = x.reshape(len(x), 3, GRID, GRID)
    if colour is not None:
        grid = np.einsum("ij,njhw->nihw", colour, grid)
    return np.asarray((DCT @ grid @ DCT.T).reshape(len(x), DIM))


def idct2(c: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray:
    grid = DCT.T @ c.reshape(len(c), 3, GRID, GRID) @ DCT
    if colour is not None:
        grid = np.einsum("ji,njhw->nihw", colour, grid)
    return np.asarray(grid.reshape(len(c), DIM))


def mirror(x: np.ndarray) -> np.ndarray:
    """Flattened (N, 3*64*64) latents mirrored left-right."""
    return np.ascontiguousarray(x.reshape(len(x), 3, GRID, GRID)[..., ::-1].reshape(len(x), -1))


@dataclass(frozen=True, eq=False)
class FacePrior:
    """The model's numbers (numpy, float64). ``basis``: the components as orthonormal rows over
    the low-frequency coordinates; ``weights``/``means``/``chols``: the mixture in whitened PCA
    coefficients (coefficient / sqrt(variance)), empty before the mixture is fit."""

    mean: np.ndarray  # (D,) pixels
    colour: np.ndarray  # (3, 3) orthonormal rows: the channels' principal colours
    basis: np.ndarray  # (d, |L|) orthonormal rows
    variances: np.ndarray  # (d,)
    noise: np.ndarray  # (D,) v: residual variance of each coordinate
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    chols: np.ndarray  # (K, d, d) lower triangular

    @classmethod
    def from_parts(
        cls,
        mean: np.ndarray,
        colour: np.ndarray,
        basis: np.ndarray,
        variances: np.ndarray,
        noise: np.ndarray,
    ) -> FacePrior:
        d = len(basis)
        empty = (np.ones(0), np.zeros((0, d)), np.zeros((0, d, d)))
        return cls(mean, colour, basis, variances, noise, *empty)

    def with_mixture(self, weights: np.ndarray, means: np.ndarray, chols: np.ndarray) -> FacePrior:
        return replace(self, weights=weights, means=means, chols=chols)

    @property
    def components(self) -> int:
        return len(self.basis)

    def coordinates(self, centred: np.ndarray) -> np.ndarray:
        """Model coordinates X (N, D) of centred flattened latents (N, D)."""
        return dct2(centred, self.colour)

    def project(self, centred: np.ndarray) -> np.ndarray:
        """PCA coefficients (N, d) of centred flattened latents (N, D)."""
        return np.asarray(self.coordinates(centred)[:, LOW] @ self.basis.T)

    def loading(self) -> np.ndarray:
        """U embedded in all coordinates: (D, d), zero on H, orthonormal columns."""
        w = np.zeros((DIM, self.components))
        w[LOW] = self.basis.T
        return w

    def covariances(self) -> np.ndarray:
        """(K, d, d) component covariances of the (unwhitened) PCA coefficients."""
        sd = np.sqrt(self.variances)
        factors = self.chols @ self.chols.transpose(0, 2, 1)
        return np.asarray(sd[None, :, None] * factors * sd[None, None])

    def log_likelihood(self, latents: np.ndarray) -> np.ndarray:
        """log p(x) per latent (N, 3, 64, 64), in nats (the model at a = 1)."""
        x = torch.from_numpy(
            self.coordinates(latents.reshape(len(latents), -1).astype(np.float64) - self.mean)
        )
        lam = torch.from_numpy(self.noise)
        w = torch.from_numpy(self.loading())
        means = torch.from_numpy(self.means * np.sqrt(self.variances))
        f = Factored.of(w.T @ (w / lam[:, None]), torch.from_numpy(self.covariances()), means)
        logpi = torch.from_numpy(np.log(self.weights / self.weights.sum()))
        const = -0.5 * (float(torch.log(lam).sum()) + DIM * math.log(2 * math.pi))
        return mixture_posterior(x, lam, w, f, means, logpi, 1.0)[2].numpy() + const

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
            colour=self.colour.astype(np.float64),
            basis=self.basis.astype(np.float16),
            variances=self.variances.astype(np.float32),
            noise=self.noise.astype(np.float32),
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
        need = ("format", "mean", "colour", "basis", "variances", "noise", "weights")
        missing = [n for n in (*need, "means", "chols") if n not in arrays]
        if missing:
            raise ModelUnavailableError(f"{path}: not a face-prior model file (no {missing[0]})")
        if arrays["format"].shape != () or int(arrays["format"]) != FORMAT:
            raise ModelUnavailableError(f"{path}: face-prior format {arrays['format']} unknown")
        d, k = len(arrays["basis"]), len(arrays["weights"])
        rows, cols = np.tril_indices(d)
        shapes = {
            "mean": (DIM,),
            "colour": (3, 3),
            "basis": (d, len(LOW)),
            "variances": (d,),
            "noise": (DIM,),
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
        if not np.allclose(values["colour"] @ values["colour"].T, np.eye(3), atol=1e-6):
            raise ModelUnavailableError(f"{path}: face-prior colour matrix is not orthonormal")
        prior = cls(
            values["mean"],
            values["colour"],
            basis,
            values["variances"],
            values["noise"],
            values["weights"],
            values["means"],
            chols,
        )
        if not (
            (prior.noise > 0).all()
            and (prior.variances > 0).all()
            and (prior.weights > 0).all()
            and (np.abs(np.diagonal(chols, axis1=1, axis2=2)) > 0).all()
        ):
            raise ModelUnavailableError(f"{path}: face-prior model file has invalid values")
        return prior


@dataclass(frozen=True, eq=False)
class Factored:
    """What :func:`mixture_posterior` needs that does not depend on X, for one noise level (and
    one set of coordinates): with G = W^T Lambda^-1 W and M_k = a S_k, the gains
    A_k = M_k (I + G M_k)^-1, the log determinants of I + G M_k, and G m_k."""

    gain: torch.Tensor  # (K, d, d)
    logdet: torch.Tensor  # (K,)
    gm: torch.Tensor  # (K, d)

    @classmethod
    def of(cls, gram: torch.Tensor, m: torch.Tensor, means: torch.Tensor) -> Factored:
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        # A_k = (I + M_k G)^-1 M_k (push-through). One matrix at a time: torch 2.13's batched
        # LU on CPU returns garbage (zero pivots, wrong determinants, no error) once
        # torch.set_num_threads(n > 1) has been called.
        factors = [torch.linalg.lu_factor(eye + mk @ gram) for mk in m]
        gain = torch.stack(
            [torch.linalg.lu_solve(lu, piv, mk) for (lu, piv), mk in zip(factors, m, strict=True)]
        )
        # det(I + M_k G) > 0 (the eigenvalues of M_k G, like those of G^1/2 M_k G^1/2, are
        # >= 0): the log determinant is that of the LU factors' diagonal.
        logdet = torch.stack([lu.diagonal().abs().log().sum() for lu, _ in factors])
        return cls(gain, logdet, means @ gram)

    def apply(self, p: torch.Tensor) -> torch.Tensor:
        """A_k p_k for p (B, K, d)."""
        return torch.einsum("kij,bkj->bki", self.gain, p)


@dataclass(frozen=True, eq=False)
class Spectral:
    """:class:`Factored` for G = G0 / lam with lam a scalar (an isotropic residual), from one
    eigendecomposition per component that serves every noise level: with R = G0^1/2 and
    R S_k R = U_k D_k U_k^T, I + c G0 S_k (c = a / lam) has log determinant
    sum log(1 + c D_k), and A_k = a S_k (I + c G0 S_k)^-1
    = a (S_k - P_k diag(c / (1 + c D_k)) P_k^T), P_k = S_k R U_k (Woodbury). S_k need only
    be symmetric (face-net's surrogate is indefinite); C_k positive definite keeps 1 + c D_k > 0."""

    s: torch.Tensor  # (K, d, d)
    p: torch.Tensor  # (K, d, d)
    d: torch.Tensor  # (K, d)
    mg0: torch.Tensor  # (K, d): m_k G0

    @classmethod
    def of(cls, g0: torch.Tensor, s: torch.Tensor, means: torch.Tensor) -> Spectral:
        values, vectors = torch.linalg.eigh(g0)
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        # One matrix at a time (see Factored.of).
        pairs = [torch.linalg.eigh(root @ sk @ root) for sk in s]
        p = torch.stack([sk @ root @ u for sk, (_, u) in zip(s, pairs, strict=True)])
        return cls(s, p, torch.stack([d for d, _ in pairs]), means @ g0)

    def level(self, a: float, lam: float) -> _Level:
        c = a / lam
        return _Level(
            self, a, c / (1.0 + c * self.d), torch.log1p(c * self.d).sum(dim=1), self.mg0 / lam
        )


@dataclass(frozen=True, eq=False)
class _Level:
    """A :class:`Spectral` at one noise level: what :func:`mixture_posterior` reads."""

    spectral: Spectral
    a: float
    shrink: torch.Tensor  # (K, d): c / (1 + c D_k)
    logdet: torch.Tensor  # (K,)
    gm: torch.Tensor  # (K, d)

    def apply(self, p: torch.Tensor) -> torch.Tensor:
        f = self.spectral
        back = torch.einsum("kji,bkj->bki", f.p, p) * self.shrink[None]
        return self.a * (
            torch.einsum("kij,bkj->bki", f.s, p) - torch.einsum("kij,bkj->bki", f.p, back)
        )


def mixture_posterior(
    x: torch.Tensor,
    lam: torch.Tensor,
    w: torch.Tensor,
    f: Factored | _Level,
    means: torch.Tensor,
    logpi: torch.Tensor,
    a: float,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E[n | X], the component weights and log sum_k exp(logw_k) for a batch X (B, n),
    X = sqrt(a) x0 + sqrt(1 - a) n, x0 from the mixture sum_k pi_k N(W m_k, Lambda0 + W S_k W^T)
    (Lambda0 diagonal).

    ``lam``: (n,) the diagonal Lambda = a Lambda0 + (1 - a); ``w``: (n, d); ``means``: (K, d)
    the m_k; ``logpi``: (K,); ``f``: :class:`Factored` for these; ``rows``: where W is not
    zero (then ``w`` holds those rows only). Woodbury:
    C_k^-1 v = Lambda^-1 (v - W A_k p_k), p_k = W^T Lambda^-1 v, A_k = M_k (I + G M_k)^-1,
    log det C_k = sum log Lambda + log det(I + G M_k). The third value plus
    -(sum log Lambda + n log 2 pi) / 2 is log p(X)."""
    xi = x / lam
    p0 = (xi if rows is None else xi[:, rows]) @ w  # (B, d): W^T Lambda^-1 X
    p = p0[:, None, :] - math.sqrt(a) * f.gm[None]  # (B, K, d): W^T Lambda^-1 v_k
    mq = f.apply(p)
    norm = (
        (x * xi).sum(dim=1, keepdim=True)
        - 2 * math.sqrt(a) * (p0 @ means.T)
        + a * (f.gm * means).sum(dim=1)[None]
    )
    logw = logpi - 0.5 * (f.logdet[None] + norm - (p * mq).sum(dim=2))
    weights = torch.softmax(logw, dim=1)
    mixed = (weights[..., None] * (math.sqrt(a) * means[None] + mq)).sum(dim=1)  # (B, d)
    if rows is None:
        fitted = mixed @ w.T
    else:
        fitted = torch.zeros_like(x)
        fitted[:, rows] = mixed @ w.T
    eps = math.sqrt(1.0 - a) * (x - fitted) / lam
    return eps, weights, torch.logsumexp(logw, dim=1)


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


class OutsidePredictor:
    """The noise prediction outside a mask from the outside alone (what keyflip needs for an
    exact round trip, METHOD §7): E[n_out | z_t,out] under the marginal, on the outside
    latent cells, of a Gaussian mixture sum_k pi_k N(mu + W m_k, iso I + W S_k W^T) over the
    latent pixels (W: orthonormal columns). Woodbury in W's dimension, from one
    eigendecomposition per mask (:class:`Spectral`) that serves every noise level."""

    def __init__(
        self,
        mu: torch.Tensor,
        w: torch.Tensor,
        s: torch.Tensor,
        means: torch.Tensor,
        logpi: torch.Tensor,
        iso: float,
    ) -> None:
        self.mu, self.w, self.s, self.means, self.logpi, self.iso = mu, w, s, means, logpi, iso
        self._outside: dict[bytes, tuple[torch.Tensor, Spectral]] = {}

    def __call__(
        self, latents: torch.Tensor, mask: torch.Tensor, timestep: int, a: float
    ) -> torch.Tensor:
        """The prediction (B, 3, 64, 64) outside ``mask`` (bool, broadcast to the latents);
        zero inside."""
        inside = mask.to(latents.device).expand_as(latents)
        lam_value = a * self.iso + (1.0 - a)
        device = self.mu.device
        flat = latents.reshape(len(latents), -1).to(device, torch.float64)
        out = torch.zeros(len(latents), DIM, dtype=torch.float64, device=device)
        groups: dict[bytes, list[int]] = {}  # latents with one mask (a video track's) together
        for i, where in enumerate(inside):
            key = bytes(np.packbits((~where).reshape(-1).cpu().numpy()))
            groups.setdefault(key, []).append(i)
        for key, rows in groups.items():
            outside = ~inside[rows[0]].reshape(-1).to(device)
            if key not in self._outside:
                if len(self._outside) >= 16:
                    self._outside.clear()
                w_o = self.w[outside]
                self._outside[key] = (w_o, Spectral.of(w_o.T @ w_o, self.s, self.means))
            w_o, spectral = self._outside[key]
            x = flat[rows][:, outside] - math.sqrt(a) * self.mu[outside]
            lam = torch.full_like(x[0], lam_value)
            f = spectral.level(a, lam_value)
            e = mixture_posterior(x, lam, w_o, f, self.means, self.logpi, a)[0]
            out[torch.tensor(rows, device=device)[:, None], outside.nonzero()[:, 0][None]] = e
        return out.reshape(latents.shape)


class DctLatent:
    """What the embedded backbones share: the 4x4 area-mean latent, the consistent bicubic
    decoder, and the orthonormal colour-DCT coordinates (``_dct``, ``_colour`` set by the
    subclass)."""

    image_size = GRID * FACTOR
    latent_shape = (3, GRID, GRID)
    colour_latent = True  # the latent is colour in pixels (faceanon.methods.colour)
    _dct: torch.Tensor
    _colour: torch.Tensor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, FACTOR)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return upsample(latents)

    def _dct2(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.einsum("ij,njhw->nihw", self._colour, x.reshape(len(x), 3, GRID, GRID))
        return (self._dct @ grid @ self._dct.T).reshape(len(x), DIM)

    def _idct2(self, c: torch.Tensor) -> torch.Tensor:
        grid = self._dct.T @ c.reshape(len(c), 3, GRID, GRID) @ self._dct
        return torch.einsum("ji,njhw->nihw", self._colour, grid).reshape(len(c), DIM)


class FacePriorBackbone(DctLatent):
    """The exact-score backbone of a :class:`FacePrior` (module docstring)."""

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

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, torch.float64)

        self._rows = torch.from_numpy(LOW).to(self.device)  # where the loading is not zero
        self._w = put(prior.basis.T)  # (|L|, d): the loading's rows there
        self._s = put(prior.covariances())  # (K, d, d)
        self._lambda0 = put(prior.noise)
        self._mu = put(prior.mean)
        self._means = put(prior.means * np.sqrt(prior.variances))  # (K, d)
        self._logpi = put(np.log(prior.weights / prior.weights.sum()))
        self._dct = put(DCT)
        self._colour = put(prior.colour)
        self._factored: dict[int, Factored] = {}
        # Outside a mask: the same mixture in pixels with an isotropic residual of the same
        # total variance (the masked prediction must ignore the inside; it need not be the
        # exact marginal).
        self._outside = OutsidePredictor(
            self._mu,
            put(idct2(prior.loading().T, prior.colour).T),  # (D, d), orthonormal
            self._s,
            self._means,
            self._logpi,
            float(prior.noise.mean()),
        )

    def posterior(self, latents: torch.Tensor, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """E[n | z_t] (B, 3, 64, 64) and the component weights (B, K)."""
        a = float(self.schedule.alphas_cumprod[timestep])
        z = latents.reshape(len(latents), -1).to(self.device, torch.float64)
        x = self._dct2(z - math.sqrt(a) * self._mu)
        lam = a * self._lambda0 + (1.0 - a)
        if timestep not in self._factored:
            gram = self._w.T @ (self._w / lam[self._rows, None])
            self._factored[timestep] = Factored.of(gram, a * self._s, self._means)
        f = self._factored[timestep]
        eps, weights, _ = mixture_posterior(
            x, lam, self._w, f, self._means, self._logpi, a, self._rows
        )
        return self._idct2(eps).reshape(latents.shape).to(latents.dtype), weights

    def log_density(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        """log p_t(z_t) (B,) of the noised model (nats); Tweedie: eps = -sqrt(1-a) grad log p_t."""
        a = float(self.schedule.alphas_cumprod[timestep])
        z = latents.reshape(len(latents), -1).to(self.device, torch.float64)
        lam = a * self._lambda0 + (1.0 - a)
        gram = self._w.T @ (self._w / lam[self._rows, None])
        f = Factored.of(gram, a * self._s, self._means)
        x = self._dct2(z - math.sqrt(a) * self._mu)
        log = mixture_posterior(x, lam, self._w, f, self._means, self._logpi, a, self._rows)[2]
        return log - 0.5 * (torch.log(lam).sum() + DIM * math.log(2 * math.pi))

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        return self.posterior(latents, timestep)[0]

    def posterior_weights(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        """(B, K) component weights given z_t at ``timestep``."""
        return self.posterior(latents, timestep)[1]

    def masked_eps(self, latents: torch.Tensor, timestep: int, mask: torch.Tensor) -> torch.Tensor:
        """The noise prediction keyflip uses: inside ``mask`` (bool, (B, 1, h, w)) the model's
        E[n | z_t]; outside, E[n_out | z_t,out] under the marginal of the outside of a
        surrogate, the mixture in pixels with covariances iso I + W S_k W^T (iso: the model's
        mean residual variance), which does not look at the inside. So the outside's
        trajectory depends on the outside alone: the same when inverting the original and the
        anonymized face, and re-injection puts back what the sampling step computed. This is
        what makes the anonymization exactly invertible with a model whose components span
        the whole crop (METHOD §7)."""
        full = self.eps(latents, timestep)
        a = float(self.schedule.alphas_cumprod[timestep])
        outside = self._outside(latents, mask, timestep, a).to(full.dtype)
        return torch.where(mask.to(latents.device).expand_as(latents), full, outside)


def load_face_prior(
    path: Path | None = None, device: str | torch.device = "cpu"
) -> FacePriorBackbone:
    """The shipped model (``faceanon/data/face_prior.npz``) or a file from ``fit-prior``."""
    file, revision = embedded_file(path, default_model_file(), "face-prior", "fit-prior")
    return FacePriorBackbone(FacePrior.load(file), revision=revision, device=device)


def embedded_file(path: Path | None, default: Path, name: str, command: str) -> tuple[Path, str]:
    """An embedded model's file (``path``, else the shipped ``default``) and its revision (the
    first 12 hex digits of its SHA-256); one line saying how to rebuild it if it is missing."""
    import hashlib

    file = default if path is None else Path(path)
    if not file.is_file():
        raise ModelUnavailableError(
            f"{file}: {name} model file missing (rebuild it with `faceanon {command}`)"
        )
    return file, hashlib.sha256(file.read_bytes()).hexdigest()[:12]


def sample_latents(prior: FacePrior, count: int, seed: int = 0) -> np.ndarray:
    """``count`` latents (count, 3, 64, 64) drawn from the model itself."""
    rng = np.random.default_rng(seed)
    k = rng.choice(len(prior.weights), size=count, p=prior.weights / prior.weights.sum())
    white = prior.means[k] + np.einsum(
        "nij,nj->ni", prior.chols[k], rng.standard_normal((count, prior.components))
    )
    coeffs = np.sqrt(prior.noise) * rng.standard_normal((count, DIM))
    coeffs[:, LOW] += (white * np.sqrt(prior.variances)) @ prior.basis
    pixels = prior.mean + idct2(coeffs, prior.colour)
    return np.asarray(pixels.reshape(count, 3, GRID, GRID))
