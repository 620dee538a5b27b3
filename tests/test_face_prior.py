"""The embedded face model: exact noise predictor, fit, file, decoder, photo round trip."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from faceanon.backbones.face_prior import (
    DIM,
    FacePrior,
    FacePriorBackbone,
    mirror,
    sample_latents,
    upsample,
)
from faceanon.errors import ModelUnavailableError
from faceanon.fit_prior import AlignedSet, build_prior, pca_symmetric


def synthetic_latents(count: int, seed: int = 0) -> np.ndarray:
    """Smooth random 3x64x64 "images" in three clusters (no face data in tests)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] / 64.0
    fields = np.stack([np.sin(2 * np.pi * (f * x + g * y)) for f, g in ((1, 0), (0, 1), (1, 1))])
    # Cluster spread and separation comparable to the diffusion noise, so that posterior
    # component weights are neither 0 nor 1 at mid noise levels.
    centres = rng.normal(0, 0.03, (3, 3, 3))  # cluster, channel, field
    labels = rng.integers(0, 3, count)
    coeffs = centres[labels] + rng.normal(0, 0.008, (count, 3, 3))
    out = np.einsum("ncf,fhw->nchw", coeffs, fields) + rng.normal(0, 0.02, (count, 3, 64, 64))
    return np.clip(out, -1, 1).astype(np.float32)


def tiny_prior(d: int = 3, k: int = 3, seed: int = 0) -> FacePrior:
    latents = synthetic_latents(150, seed)
    aligned = AlignedSet([str(i) for i in range(150)], latents, np.zeros(150), [], [])
    return build_prior(aligned, d, k, seed=seed, iters=15, heldout=0.1)[0]


@pytest.fixture(scope="module")
def prior() -> FacePrior:
    return tiny_prior()


def test_components_are_orthonormal_and_mirror_symmetric(prior: FacePrior) -> None:
    u = prior.basis()
    assert np.allclose(u.T @ u, np.eye(prior.components), atol=1e-10)
    # Each component is its own mirror image times its parity.
    assert np.allclose(mirror(u.T), prior.parity[:, None] * u.T, atol=1e-12)


def test_symmetric_pca_equals_plain_pca_of_the_data_and_its_mirror() -> None:
    x = synthetic_latents(40, seed=3).reshape(40, -1).astype(np.float64)
    _, _, _, variances, residual = pca_symmetric(x, 5)
    both = np.concatenate([x, mirror(x)])
    centred = both - both.mean(axis=0)
    top = np.sort(np.linalg.svd(centred, compute_uv=False) ** 2 / len(both))[::-1]
    assert np.allclose(variances, top[:5], rtol=1e-8)
    total = (centred**2).sum() / len(both)
    assert residual == pytest.approx((total - top[:5].sum()) / (DIM - 5), rel=1e-8)


def test_eps_equals_a_monte_carlo_posterior_mean(prior: FacePrior) -> None:
    """E[n | z_t] from the formula vs importance sampling of the model's own prior: inside
    the PCA subspace (mixture posterior) and along the residual (Gaussian regression)."""
    backbone = FacePriorBackbone(prior)
    rng = np.random.default_rng(1)
    sd = np.sqrt(prior.variances)
    u = prior.basis()
    # 400k coefficient samples from the mixture, drawn independently of the backbone's code.
    n = 400_000
    comp = rng.choice(len(prior.weights), n, p=prior.weights / prior.weights.sum())
    white = prior.means[comp] + np.einsum(
        "nij,nj->ni", prior.chols[comp], rng.standard_normal((n, prior.components))
    )
    c = white * sd
    x0 = sample_latents(prior, 1, seed=7)[0].ravel()
    mixed = False  # some level where no component takes all the weight
    for t in (50, 300, 500, 700):
        a = float(backbone.schedule.alphas_cumprod[t])
        noise = rng.standard_normal(DIM)
        zt = math.sqrt(a) * x0 + math.sqrt(1 - a) * noise
        eps = backbone.eps(torch.from_numpy(zt.reshape(1, 3, 64, 64)), t).numpy().ravel()
        y = u.T @ (zt - math.sqrt(a) * prior.mean)
        logw = -((y - math.sqrt(a) * c) ** 2).sum(axis=1) / (2 * (1 - a))
        w = np.exp(logw - logw.max())
        c_mean = (w[:, None] * c).sum(axis=0) / w.sum()
        # Standard error of the self-normalised estimate, per coordinate.
        se = np.sqrt((w[:, None] ** 2 * (c - c_mean) ** 2).sum(axis=0)) / w.sum()
        expected = (y - math.sqrt(a) * c_mean) / math.sqrt(1 - a)
        tolerance = 5 * se * math.sqrt(a / (1 - a)) + 1e-3
        assert (np.abs(u.T @ eps - expected) < tolerance).all(), (t, u.T @ eps, expected)
        weights = backbone.posterior_weights(torch.from_numpy(zt.reshape(1, 3, 64, 64)), a)
        mixed |= bool((weights < 0.95).all())
        # Residual direction: E[n | q] = slope * q with slope from samples of (r, n).
        r = rng.normal(0, math.sqrt(prior.residual), 200_000)
        nn = rng.standard_normal(200_000)
        q = math.sqrt(a) * r + math.sqrt(1 - a) * nn
        slope = (nn * q).mean() / (q * q).mean()
        rest = zt - math.sqrt(a) * prior.mean
        rest -= u @ (u.T @ rest)
        eps_rest = eps - u @ (u.T @ eps)
        assert np.allclose(eps_rest, slope * rest, rtol=0.02, atol=1e-9), t
    assert mixed


def test_fit_is_deterministic_to_the_byte() -> None:
    assert tiny_prior(seed=2).to_bytes("n") == tiny_prior(seed=2).to_bytes("n")
    assert tiny_prior(seed=2).to_bytes("n") != tiny_prior(seed=5).to_bytes("n")


def test_em_raises_the_likelihood() -> None:
    from faceanon.fit_prior import fit_gmm

    z = np.random.default_rng(0).normal(size=(300, 2)) + np.repeat([[0, 0], [4, 4]], 150, axis=0)
    history = fit_gmm(z, 2, seed=0, iters=10)[3]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(history))


def test_file_round_trip_and_bad_files(prior: FacePrior, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.npz"
    path.write_bytes(prior.to_bytes("note"))
    loaded = FacePrior.load(path)
    assert np.allclose(loaded.half, prior.half, atol=1e-3)
    assert np.allclose(loaded.chols, prior.chols, atol=2e-3 * np.abs(prior.chols).max())
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelUnavailableError, match=r"bad\.npz: not a face-prior model file"):
        FacePrior.load(bad)
    arrays = dict(np.load(path))
    arrays["variances"] = -arrays["variances"]
    np.savez(bad, **arrays)
    with pytest.raises(ModelUnavailableError, match="invalid values"):
        FacePrior.load(bad)
    arrays = dict(np.load(path))
    arrays["half"] = arrays["half"][:, :10]
    np.savez(bad, **arrays)
    with pytest.raises(ModelUnavailableError, match="array half has shape"):
        FacePrior.load(bad)


def test_decoder_is_consistent_with_the_encoder_and_smoother_than_nearest() -> None:
    y, x = np.mgrid[0:256, 0:256] / 256.0
    image = torch.from_numpy(np.stack([np.sin(6 * x + 3 * y), np.cos(5 * y), x * y]))[None]
    z = torch.nn.functional.avg_pool2d(image, 4)
    up = upsample(z)
    assert torch.allclose(torch.nn.functional.avg_pool2d(up, 4), z, atol=1e-12)
    error = {m: float(((upsample(z, m) - image) ** 2).mean()) for m in ("nearest", "bicubic")}
    assert float(((up - image) ** 2).mean()) < error["nearest"] / 4


def test_shipped_model_loads_and_is_small() -> None:
    from faceanon.backbones.face_prior import default_model_file
    from faceanon.backbones.registry import load_backbone

    assert default_model_file().stat().st_size <= 5 * 2**20
    backbone = load_backbone("face-prior")
    assert backbone.name == "face-prior" and backbone.revision
    assert backbone.latent_shape == (3, 64, 64) and backbone.image_size == 256
