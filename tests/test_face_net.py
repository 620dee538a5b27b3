"""face-net: the learned noise predictor, its file, its round trip and its training command."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_face_prior import synthetic_latents

from faceanon.backbones.face_net import (
    Architecture,
    FaceNet,
    FaceNetBackbone,
    gaussian_eps,
    load_face_net,
)
from faceanon.errors import ModelUnavailableError
from faceanon.faces.masks import EllipseMask
from faceanon.methods.keyflip import keyflip_latent
from faceanon.secure.keys import SecretKey, sign_vector
from faceanon.training.fit_net import train

TINY = Architecture(luma=8, chroma=4, width=64, blocks=1, surrogate_luma=4, surrogate_chroma=2)


def held_out_mse(model: FaceNet, data: np.ndarray, seed: int = 5) -> float:
    """Noise MSE of the learned block on ``data`` at seeded levels and noise."""
    from faceanon.backbones.closed_form import reference_schedule
    from faceanon.training.fit_net import learned_block

    x0 = torch.from_numpy(
        learned_block(
            data.reshape(len(data), -1).astype(np.float64), model.mean, model.colour, TINY
        )
    ).double()
    gen = torch.Generator().manual_seed(seed)
    alphas = torch.as_tensor(reference_schedule().alphas_cumprod, dtype=torch.float64)
    a = alphas[torch.randint(0, 1000, (len(x0),), generator=gen)]
    n = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    xt = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * n
    with torch.no_grad():
        return float(((model.learned_eps(xt, a) - n) ** 2).mean())


@pytest.fixture(scope="module")
def trained() -> tuple[FaceNet, FaceNet, np.ndarray]:
    """A tiny model trained 400 steps on clustered synthetic latents, the same untrained, and
    held-out latents of the same kind."""
    # Well-separated clusters and no pixel noise: the posterior is far from any single
    # Gaussian's, and the error is all where the clusters are.
    data = synthetic_latents(400, seed=1, scale=8.0, noise=0.0)
    test = synthetic_latents(200, seed=2, scale=8.0, noise=0.0)
    floor = (1e-5, 1e-5)  # next to no white noise: the error is where the clusters are
    model, log = train(data, test, TINY, 400, floor, batch=128, lr=6e-3, log_every=200)
    untrained, _ = train(data, test, TINY, 0, floor)
    assert log.steps == [200, 400] and log.heldout[1] < log.heldout[0]
    return model, untrained, test


def test_learned_eps_beats_the_untrained_network(trained) -> None:
    model, untrained, test = trained
    # The untrained network adds nothing to the diagonal Gaussian (zero-initialised output).
    before, after = held_out_mse(untrained, test), held_out_mse(model, test)
    assert after < 0.8 * before, (before, after)


def test_gaussian_eps_is_the_posterior_mean_of_gaussian_data() -> None:
    gen = torch.Generator().manual_seed(0)
    v = torch.tensor([0.01, 0.5, 2.0], dtype=torch.float64)
    a = torch.full((200000,), 0.3, dtype=torch.float64)
    x0 = torch.randn((200000, 3), generator=gen, dtype=torch.float64) * v.sqrt()
    n = torch.randn((200000, 3), generator=gen, dtype=torch.float64)
    xt = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * n
    # E[n | x_t] is linear in x_t: the least-squares slope of n on x_t, per coordinate.
    slope = (n * xt).sum(dim=0) / (xt * xt).sum(dim=0)
    expected = gaussian_eps(torch.ones(1, 3, dtype=torch.float64), v, a[:1])[0]
    assert torch.allclose(slope, expected, rtol=0.02)


def test_file_round_trip_is_exact(trained, tmp_path: Path) -> None:
    model = trained[0]
    path = tmp_path / "m.safetensors"
    path.write_bytes(model.to_bytes())
    again = FaceNet.load(path)
    assert again.arch == model.arch
    assert np.allclose(again.variances, model.variances, rtol=1e-6)
    x = torch.randn(4, len(TINY.learned), dtype=torch.float64)
    a = torch.full((4,), 0.4, dtype=torch.float64)
    with torch.no_grad():  # float16 weights in the file
        assert torch.allclose(again.learned_eps(x, a), model.learned_eps(x, a), atol=2e-3)
    assert path.read_bytes() == again.to_bytes()  # loading and saving changes nothing


def test_masked_round_trip_restores_and_a_wrong_key_does_not(trained) -> None:
    from dataclasses import replace

    # The shipped floors (the fixture trained with next to none: its inversion is stiff).
    backbone = FaceNetBackbone(replace(trained[0], floor=FaceNet.floor))
    x = torch.from_numpy(synthetic_latents(3, seed=7).astype(np.float64))
    mask = torch.from_numpy(EllipseMask().grid(64, 64))[None, None].expand(3, 1, 64, 64)
    nonces = [bytes([i]) * 16 for i in range(3)]

    def signs(key: SecretKey) -> torch.Tensor:
        return torch.from_numpy(np.stack([sign_vector(key, (3, 64, 64), n) for n in nonces]))

    right, wrong = signs(SecretKey(bytes(16))), signs(SecretKey(bytes(15) + b"\x01"))
    anon = keyflip_latent(backbone, x, right, mask, 20, refine=8)
    back = keyflip_latent(backbone, anon, right, mask, 20, refine=8)
    off = keyflip_latent(backbone, anon, wrong, mask, 20, refine=8)
    inside = mask.expand_as(x)

    def rms(d: torch.Tensor) -> float:
        return float(d[inside].pow(2).mean().sqrt())

    assert torch.equal(anon[~inside], x[~inside])  # the outside is kept exactly
    assert rms(anon - x) > 0.02
    assert rms(back - x) < 0.2 * rms(anon - x)  # measured 0.13 (face-prior: 0.14 at T = 50)
    assert rms(off - x) > 0.5 * rms(anon - x)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "foreign", "shape", "nan"],
)
def test_loading_refuses_a_damaged_or_foreign_file_in_one_line(trained, tmp_path, damage) -> None:
    from safetensors.torch import load, save

    good = trained[0].to_bytes()
    path = tmp_path / "m.safetensors"
    if damage == "truncated":
        data = good[: len(good) // 2]
    elif damage == "garbage":
        data = b"\x00" * 64
    else:
        tensors = load(good)
        header = good[8 : 8 + int.from_bytes(good[:8], "little")].decode()
        import json

        meta = json.loads(header)["__metadata__"]
        if damage == "foreign":
            meta = {"format": "pt"}  # a transformers checkpoint, say
        elif damage == "shape":
            tensors["variances"] = tensors["variances"][:100]
        else:
            tensors["net.inp.weight"] = tensors["net.inp.weight"] * math.nan
        data = save(tensors, metadata=meta)
    path.write_bytes(data)
    with pytest.raises(ModelUnavailableError) as info:
        FaceNet.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_model_file_says_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="fit-net"):
        load_face_net(tmp_path / "none.safetensors")


def test_fit_net_command_writes_model_curve_and_samples(tmp_path: Path) -> None:
    from faceanon.apps.cli import main

    cache = tmp_path / "aligned.npz"
    buffer = io.BytesIO()
    latents = synthetic_latents(120, seed=3)
    np.savez(buffer, latents=latents.astype(np.float16), padding=np.zeros(len(latents)))
    cache.write_bytes(buffer.getvalue())
    out = tmp_path / "net.safetensors"
    argv = [
        "fit-net",
        str(tmp_path / "no-such-dir"),
        "-o",
        str(out),
        "--aligned-cache",
        str(cache),
        "--steps",
        "20",
        "--batch",
        "16",
        "--width",
        "32",
        "--blocks",
        "1",
    ]
    assert main(argv) == 0
    model = FaceNet.load(out)
    assert "fit-net" in model.note and "non-commercial" in model.note
    assert (tmp_path / "net-loss.png").stat().st_size > 0
    from PIL import Image

    assert Image.open(tmp_path / "net-samples.png").size == (1024, 1024)
    assert main(argv) == 2  # the model exists: not replaced without --overwrite
