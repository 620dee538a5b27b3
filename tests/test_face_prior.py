"""The embedded face model: exact noise predictor, fit, file, decoder, photo round trip."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from faceanon.backbones.face_prior import (
    DIM,
    HIGH,
    LOW,
    FacePrior,
    FacePriorBackbone,
    dct2,
    idct2,
    mirror,
    sample_latents,
    upsample,
)
from faceanon.errors import ModelUnavailableError
from faceanon.fit_prior import AlignedSet, build_prior, pca_low
from faceanon.keys import SecretKey

RESTORED_DB = 30.0  # measured: see the closing note of issue 11


def synthetic_latents(
    count: int, seed: int = 0, scale: float = 1.0, noise: float = 0.02
) -> np.ndarray:
    """Smooth random 3x64x64 "images" in three clusters (no face data in tests)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64] / 64.0
    fields = np.stack([np.sin(2 * np.pi * (f * x + g * y)) for f, g in ((1, 0), (0, 1), (1, 1))])
    # Cluster spread and separation comparable to the diffusion noise, so that posterior
    # component weights are neither 0 nor 1 at mid noise levels.
    centres = rng.normal(0, 0.03 * scale, (3, 3, 3))  # cluster, channel, field
    labels = rng.integers(0, 3, count)
    coeffs = centres[labels] + rng.normal(0, 0.008 * scale, (count, 3, 3))
    out = np.einsum("ncf,fhw->nchw", coeffs, fields) + rng.normal(0, noise, (count, 3, 64, 64))
    return np.clip(out, -1, 1).astype(np.float32)


def tiny_prior(d: int = 3, k: int = 3, seed: int = 0, **data: float) -> FacePrior:
    latents = synthetic_latents(150, seed, **data)
    aligned = AlignedSet([str(i) for i in range(150)], latents, np.zeros(150), [], [])
    return build_prior(aligned, d, k, seed=seed, iters=15, heldout=0.1)[0]


@pytest.fixture(scope="module")
def prior() -> FacePrior:
    return tiny_prior()


def test_components_are_orthonormal_low_frequencies(prior: FacePrior) -> None:
    assert np.allclose(prior.basis @ prior.basis.T, np.eye(prior.components), atol=1e-10)
    u = prior.pixel_basis()
    assert np.allclose(u.T @ u, np.eye(prior.components), atol=1e-10)
    x = synthetic_latents(5, seed=9).reshape(5, -1).astype(np.float64)
    assert np.allclose(idct2(dct2(x)), x, atol=1e-12)
    assert np.allclose(prior.project(x), x @ u, atol=1e-10)


def test_low_frequency_pca_equals_plain_pca_of_the_data_and_its_mirror() -> None:
    x = synthetic_latents(40, seed=3).reshape(40, -1).astype(np.float64)
    mean, _, variances, residual, high = pca_low(x, 5)
    both = np.concatenate([x, mirror(x)])
    coeffs = dct2(both - both.mean(axis=0))
    low = coeffs[:, LOW]
    top = np.sort(np.linalg.svd(low, compute_uv=False) ** 2 / len(both))[::-1]
    assert np.allclose(variances, top[:5], rtol=1e-8)
    assert residual == pytest.approx(((low**2).sum() / len(both) - top[:5].sum()) / (len(LOW) - 5))
    assert np.allclose(high, (coeffs[:, HIGH] ** 2).mean(axis=0))
    assert np.allclose(mean, both.mean(axis=0))


def test_eps_equals_a_monte_carlo_posterior_mean(prior: FacePrior) -> None:
    """E[n | z_t] from the formula vs importance sampling of the model's own prior: inside
    the PCA subspace (mixture posterior) and along the residual (Gaussian regression)."""
    backbone = FacePriorBackbone(prior)
    rng = np.random.default_rng(1)
    sd = np.sqrt(prior.variances)
    u = prior.pixel_basis()
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

        # Outside the components: E[n | q] = slope(v) * q per coordinate of the DCT, v the
        # residual variance of L (s2) or that high frequency's; slopes from samples of (r, n).
        def slope(variance: float, a: float = a) -> float:
            r = rng.normal(0, math.sqrt(variance), 200_000)
            nn = rng.standard_normal(200_000)
            q = math.sqrt(a) * r + math.sqrt(1 - a) * nn
            return float((nn * q).mean() / (q * q).mean())

        rest = dct2((zt - math.sqrt(a) * prior.mean)[None])[0]
        e = dct2(eps[None])[0]
        low_rest = rest[LOW] - prior.basis.T @ (prior.basis @ rest[LOW])
        low_eps = e[LOW] - prior.basis.T @ (prior.basis @ e[LOW])
        assert np.allclose(low_eps, slope(prior.residual) * low_rest, rtol=0.02, atol=1e-9), t
        for j in (0, len(HIGH) // 2, len(HIGH) - 1):
            expected_h = slope(prior.high[j]) * rest[HIGH[j]]
            assert e[HIGH[j]] == pytest.approx(expected_h, rel=0.03, abs=1e-9), t
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
    assert np.allclose(loaded.basis, prior.basis, atol=2e-3)
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
    arrays["basis"] = arrays["basis"][:, :10]
    np.savez(bad, **arrays)
    with pytest.raises(ModelUnavailableError, match="array basis has shape"):
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


def _mask(kind: str) -> torch.Tensor:
    m = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    if kind == "ellipse":
        from faceanon.masks import EllipseMask

        m[0, 0] = torch.from_numpy(EllipseMask().grid(64, 64))
    elif kind == "all-but-corner":
        m[:] = True
        m[..., :10, :10] = False
    return m


def test_masked_eps_is_the_marginal_of_the_outside(prior: FacePrior) -> None:
    """Outside the mask: E[n_o | z_o] of the marginal of the model with an isotropic residual
    of the same total variance, checked against dense Gaussians on a 300-coordinate outside;
    inside: the full prediction."""
    from dataclasses import replace

    iso = prior.mean_residual()
    backbone = FacePriorBackbone(prior)
    isotropic = FacePriorBackbone(replace(prior, residual=iso, high=np.full(len(HIGH), iso)))
    z = torch.from_numpy(sample_latents(prior, 1, seed=3))
    t = 400
    a = float(backbone.schedule.alphas_cumprod[t])
    zt = math.sqrt(a) * z + math.sqrt(1 - a) * torch.randn(z.shape, dtype=torch.float64)
    empty = _mask("none")  # with an isotropic residual the whole marginal is the model
    assert torch.allclose(isotropic.masked_eps(zt, t, empty), isotropic.eps(zt, t), atol=1e-10)
    mask = _mask("all-but-corner")
    out = backbone.masked_eps(zt, t, mask)
    o = ~mask.expand(1, 3, 64, 64).reshape(-1).numpy()
    u_o = prior.pixel_basis()[o]
    sd = np.sqrt(prior.variances)
    zo = zt.reshape(-1).numpy()[o]
    logs, posts = [], []
    for k in range(len(prior.weights)):
        s_k = sd[:, None] * (prior.chols[k] @ prior.chols[k].T) * sd[None]
        cov = a * (u_o @ s_k @ u_o.T + iso * (np.eye(o.sum()) - u_o @ u_o.T))
        cov += (1 - a) * np.eye(o.sum())
        diff = zo - math.sqrt(a) * (prior.mean[o] + u_o @ (prior.means[k] * sd))
        logdet = np.linalg.slogdet(cov)[1]
        solved = np.linalg.solve(cov, diff)
        logs.append(np.log(prior.weights[k]) - 0.5 * (logdet + diff @ solved))
        posts.append(math.sqrt(1 - a) * solved)
    w = np.exp(np.array(logs) - max(logs))
    expected = (w[:, None] * np.array(posts)).sum(axis=0) / w.sum()
    assert np.allclose(out.reshape(-1).numpy()[o], expected, atol=1e-8)
    inside = mask.expand(1, 3, 64, 64)
    assert torch.equal(out[inside], backbone.eps(zt, t)[inside])


def test_masked_eps_outside_ignores_the_inside(prior: FacePrior) -> None:
    backbone = FacePriorBackbone(prior)
    z = torch.from_numpy(sample_latents(prior, 2, seed=4))
    mask = _mask("ellipse").expand(2, 1, 64, 64)
    inside = mask.expand(2, 3, 64, 64)
    other = torch.where(inside, -3 * z, z)
    a, b = backbone.masked_eps(z, 300, mask), backbone.masked_eps(other, 300, mask)
    assert torch.equal(a[~inside], b[~inside])
    assert not torch.allclose(a[inside], b[inside])


def test_keyflip_restores_with_the_masked_prediction_only() -> None:
    """With a model whose components span the crop, re-injection breaks the inversion unless
    the outside is predicted from the outside alone. (Pixel noise and spread like real faces':
    a residual sd of 0.02 makes the ODE too stiff for 50 steps.)"""
    from faceanon.keys import sign_vector
    from faceanon.methods.keyflip import keyflip_latent

    prior = tiny_prior(scale=5.0, noise=0.15)
    backbone = FacePriorBackbone(prior)
    z = torch.from_numpy(sample_latents(prior, 2, seed=5))
    mask = _mask("ellipse").expand(2, 1, 64, 64)
    inside = mask.expand(2, 3, 64, 64)
    key = SecretKey(bytes(range(16)))
    signs = torch.from_numpy(
        np.stack([sign_vector(key, (3, 64, 64), bytes([i]) * 16) for i in (1, 2)])
    )

    class Plain:  # the same model without masked_eps
        def __init__(self) -> None:
            self.schedule, self.eps = backbone.schedule, backbone.eps

    def error(model: object) -> tuple[float, float]:
        anon = keyflip_latent(model, z, signs, mask, 50, refine=4)  # type: ignore[arg-type]
        back = keyflip_latent(model, anon, signs, mask, 50, refine=4)  # type: ignore[arg-type]
        assert torch.equal(anon[~inside], z[~inside])
        rms = lambda x: float(x[inside].pow(2).mean().sqrt())  # noqa: E731
        return rms(anon - z), rms(back - z)

    moved, restored = error(backbone)
    assert restored < moved / 20
    plain_restored = error(Plain())[1]
    assert plain_restored > 3 * restored


def test_default_model_anonymizes_the_example_photo_offline(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """The README's main command with the shipped model: a different face that a detector
    still finds, restored by the key, not by a key one bit off; the rest byte-identical."""
    import cv2
    from PIL import Image

    from faceanon.cli import main
    from faceanon.faces.detect import make_detector
    from faceanon.pipeline import FaceFinder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = Path(__file__).resolve().parents[1]
    photo = np.asarray(Image.open(root / "examples" / "astronaut.jpg").convert("RGB"))
    Image.fromarray(photo).save("astro.png")
    key = SecretKey(bytes(range(16)))
    Path("my.key").write_text(key.to_text() + "\n")
    wrong = SecretKey(bytes([1]) + bytes(range(1, 16)))
    Path("wrong.key").write_text(wrong.to_text() + "\n")
    assert main(["anonymize", "astro.png", "-k", "my.key"]) == 0
    assert "model: face-prior@" in capsys.readouterr().err
    assert main(["deanonymize", "astro_anonymized.png", "-k", "my.key", "-o", "right"]) == 0
    assert main(["deanonymize", "astro_anonymized.png", "-k", "wrong.key", "-o", "wrong"]) == 0

    def read(name: str) -> np.ndarray:
        return np.asarray(Image.open(name).convert("RGB"))

    anon, right = read("astro_anonymized.png"), read("right/astro_deanonymized.png")
    bad = read("wrong/astro_deanonymized.png")
    faces = FaceFinder().find(photo)
    region = np.zeros(photo.shape[:2], np.uint8)
    for f in faces:
        polygon = f.geometry.alignment.to_photo(f.geometry.mask.polygon)  # type: ignore[attr-defined]
        cv2.fillPoly(region, [np.round(polygon).astype(np.int32)], 1)
    face = region.astype(bool)

    def psnr(a: np.ndarray) -> float:
        diff = a[face].astype(np.float64) - photo[face]
        return float(10 * np.log10(255.0**2 / (diff**2).mean()))

    assert psnr(right) > RESTORED_DB
    assert psnr(anon) < psnr(right) - 12 and psnr(bad) < psnr(right) - 12
    near = cv2.dilate(region, np.ones((41, 41), np.uint8)).astype(bool)
    for image in (anon, right, bad):
        assert np.array_equal(image[~near], photo[~near])
    detector = make_detector("yunet")
    for image in (anon, bad):  # "a realistic other face": a detector still finds a face
        assert any(d.score > 0.75 for d in detector.detect(image))
