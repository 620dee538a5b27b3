"""The DDIM engine: schedules and steps against diffusers, and real round trips with the
closed-form backbone (exact eps for Gaussian data), where only the step size causes error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from faceanon.backbones.closed_form import GaussianBackbone
from faceanon.diffusion.ddim import ddim_step
from faceanon.diffusion.loops import invert, sample
from faceanon.diffusion.schedule import NoiseSchedule
from faceanon.faces.masks import EllipseMask

CONFIGS = [
    {
        "beta_start": 0.0015,
        "beta_end": 0.0195,
        "beta_schedule": "scaled_linear",
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "timestep_spacing": "leading",
    },
    {
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    },
    {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "set_alpha_to_one": False,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    },
]


def _schedulers(config):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    common = {"num_train_timesteps": 1000, "clip_sample": False, **config}
    return DDIMScheduler(**common), DDIMInverseScheduler(**common)


@pytest.mark.parametrize("config", CONFIGS)
def test_schedule_matches_diffusers(config):
    forward, inverse = _schedulers(config)
    ours = NoiseSchedule.from_config(dict(forward.config))
    assert np.abs(ours.alphas_cumprod - forward.alphas_cumprod.double().numpy()).max() < 1e-6
    for steps in (10, 20, 50, 100):
        forward.set_timesteps(steps)
        assert ours.subsequence(steps) == sorted(forward.timesteps.tolist())
        if config["timestep_spacing"] == "leading":
            inverse.set_timesteps(steps)
            assert ours.subsequence(steps) == inverse.timesteps.tolist()


@pytest.mark.parametrize("config", CONFIGS[:2])
@pytest.mark.parametrize("steps", [10, 50])
def test_steps_match_diffusers_ddim_schedulers(config, steps):
    """Our eq. (2) and eq. (3) steps equal DDIMScheduler.step / DDIMInverseScheduler.step (eta=0).

    Given the same alpha-bar values: diffusers accumulates alpha-bar in float32 (we use float64;
    the two differ by < 1e-6 absolute, test above), which alone moves a step by up to 6e-5
    relative at the noisiest levels.
    """
    forward, inverse = _schedulers(config)
    forward.set_timesteps(steps)
    inverse.set_timesteps(steps)
    ours = NoiseSchedule.from_config(dict(forward.config))
    theirs_alphas = forward.alphas_cumprod.double().numpy()
    levels = NoiseSchedule(
        theirs_alphas, ours.timestep_spacing, ours.steps_offset, float(forward.final_alpha_cumprod)
    ).levels(steps)
    assert levels.timesteps == ours.levels(steps).timesteps
    g = torch.Generator().manual_seed(0)
    for i in range(steps):
        z = torch.randn(2, 3, 8, 8, generator=g)
        eps = torch.randn(2, 3, 8, 8, generator=g)
        t = levels.timesteps[i + 1]
        theirs = forward.step(eps, t, z).prev_sample
        ours = ddim_step(z, eps, levels.alphas[i + 1], levels.alphas[i])
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        theirs = inverse.step(eps, t, z).prev_sample
        ours = ddim_step(z, eps, levels.alphas[i], levels.alphas[i + 1])
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_step_is_the_corrected_formula():
    """z_to/sqrt(a_to) = z_from/sqrt(a_from) + (sqrt(1/a_to-1) - sqrt(1/a_from-1)) eps."""
    z = torch.tensor([0.3, -1.2], dtype=torch.float64)
    eps = torch.tensor([0.5, 2.0], dtype=torch.float64)
    a_from, a_to = 0.4, 0.9
    expected = np.sqrt(a_to) * (
        z / np.sqrt(a_from) + (np.sqrt(1 / a_to - 1) - np.sqrt(1 / a_from - 1)) * eps
    )
    torch.testing.assert_close(ddim_step(z, eps, a_from, a_to), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        ddim_step(z, eps, 0.0, 0.5)


def test_levels_layout():
    levels = GaussianBackbone().schedule.levels(50)
    assert levels.steps == 50 and len(levels.timesteps) == 51
    assert levels.alphas[0] == 1.0 and levels.timesteps[:3] == (0, 0, 20)
    assert all(a > b for a, b in itertools.pairwise(levels.alphas))
    with pytest.raises(ValueError):
        GaussianBackbone().schedule.levels(0)


def _gaussian_latents(backbone: GaussianBackbone, batch: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return backbone.mu + backbone.sigma * torch.randn(batch, *backbone.latent_shape, generator=g)


def roundtrip_errors(steps_list=(10, 20, 50, 100)) -> dict[int, float]:
    backbone = GaussianBackbone()
    z0 = _gaussian_latents(backbone)
    errors = {}
    for steps in steps_list:
        levels = backbone.schedule.levels(steps)
        trajectory = invert(backbone.eps, z0, levels)
        z0_back = sample(backbone.eps, trajectory[-1], levels)
        errors[steps] = float((z0_back - z0).pow(2).mean().sqrt())
    return errors


def test_inversion_round_trip_error_shrinks_with_steps():
    errors = roundtrip_errors()
    values = [errors[t] for t in (10, 20, 50, 100)]
    assert all(a > 1.4 * b for a, b in itertools.pairwise(values)), errors
    # Measured 0.026 at T = 50 with the destination label; labelling inversion with the source
    # level (the 0.1 bug) gave 0.067.
    assert errors[50] < 0.03 and errors[100] < 0.015, errors


def test_fixed_point_inversion_converges_on_the_exact_model():
    backbone = GaussianBackbone()
    z0 = _gaussian_latents(backbone, 2)
    levels = backbone.schedule.levels(20)
    errors, calls = [], []
    for refine in (0, 1, 2, 4):
        count = 0

        def counted(z: torch.Tensor, t: int) -> torch.Tensor:
            nonlocal count
            count += 1
            return backbone.eps(z, t)

        trajectory = invert(counted, z0, levels, refine=refine)
        calls.append(count)
        back = sample(backbone.eps, trajectory[-1], levels)
        errors.append(float((back - z0).pow(2).mean().sqrt()))
    # T for DDIM; T * K + 1 for fixed-point:K (each step's first guess reuses the last eps).
    assert calls == [20, 21, 41, 81]
    # Measured 0.069, 0.034, 0.0069, 0.00033: each iteration after the first gains about 5x.
    assert errors[1] < 0.6 * errors[0] and errors[2] < errors[1] / 3, errors
    assert errors[3] < errors[2] / 3 and errors[3] < 1e-3, errors
    with pytest.raises(ValueError):
        invert(backbone.eps, z0, levels, refine=-1)


def _tiny_unet():
    """A small diffusers UNet whose output depends strongly on the timestep label."""
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        ).eval()
    with torch.no_grad():
        unet.time_embedding.linear_2.weight.mul_(20)
    return unet


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_whole_loops_match_diffusers_loops(config):
    """invert and sample against loops written with diffusers' schedulers and a real UNet.

    Catches a wrong timestep label in either direction (inversion told the source level:
    z_T off by 0.38; sampling told the next level: off by 12), not only a wrong step formula.
    """
    forward, inverse = _schedulers(config)
    steps = 10
    forward.set_timesteps(steps)
    inverse.set_timesteps(steps)
    unet = _tiny_unet()
    levels = NoiseSchedule.from_config(dict(forward.config)).levels(steps)
    g = torch.Generator().manual_seed(1)
    z0, noise = 0.5 * torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        return unet(z, torch.tensor(t)).sample

    with torch.inference_mode():
        theirs = [z0]
        for t in inverse.timesteps:
            theirs.append(inverse.step(unet(theirs[-1], t).sample, t, theirs[-1]).prev_sample)
        x = noise
        for t in forward.timesteps:
            x = forward.step(unet(x, t).sample, t, x).prev_sample
        ours = invert(eps, z0, levels)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        sampled = sample(eps, noise, levels)
        torch.testing.assert_close(sampled, x, rtol=1e-4, atol=1e-4 * float(x.abs().max()))


def test_inverted_noise_is_standard_gaussian():
    backbone = GaussianBackbone()
    z_t = invert(backbone.eps, _gaussian_latents(backbone), backbone.schedule.levels(100))[-1]
    assert abs(float(z_t.mean())) < 0.02 and abs(float(z_t.std()) - 1.0) < 0.05


def test_reinjection_keeps_outside_exact_at_every_step():
    backbone = GaussianBackbone()
    levels = backbone.schedule.levels(20)
    z0 = _gaussian_latents(backbone, 2)
    keep = invert(backbone.eps, z0, levels)
    mask = torch.from_numpy(EllipseMask().grid(64, 64))[None, None].expand(2, 1, 64, 64)
    seen: list[torch.Tensor] = []

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(z.clone())
        return backbone.eps(z, t)

    start = -keep[-1]  # a different noise everywhere: only re-injection can restore outside
    out = sample(eps, torch.where(mask, start, keep[-1]), levels, mask, keep)
    outside = ~mask.expand_as(z0)
    for level, z in zip(range(levels.steps, 0, -1), seen, strict=True):
        assert torch.equal(z[outside], keep[level][outside])
    assert torch.equal(out[outside], z0[outside])
    assert not torch.allclose(out[~outside], z0[~outside], atol=0.1)


def test_inversion_names():
    from faceanon.diffusion.ddim_settings import MAX_REFINE, inversion_name, parse_inversion

    assert parse_inversion("ddim") == 0 and inversion_name(0) == "ddim"
    assert parse_inversion("fixed-point:3") == 3 and inversion_name(3) == "fixed-point:3"
    assert parse_inversion("fixed-point") >= 1
    for bad in ("fixed-point:0", f"fixed-point:{MAX_REFINE + 1}", "fixed-point:x", "edict", ""):
        with pytest.raises(ValueError, match="inversion"):
            parse_inversion(bad)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("prediction_type", "v_prediction"),
        ("prediction_type", "sample"),
        ("rescale_betas_zero_snr", True),
        ("thresholding", True),
    ],
)
def test_unimplemented_scheduler_flags_are_refused(flag, value):
    config = {**CONFIGS[0], flag: value}
    with pytest.raises(ValueError, match=flag):
        NoiseSchedule.from_config(config)
    assert NoiseSchedule.from_config({**CONFIGS[0], flag: False if value is True else "epsilon"})


def test_sample_argument_checks():
    backbone = GaussianBackbone()
    levels = backbone.schedule.levels(5)
    z = torch.zeros(1, *backbone.latent_shape)
    with pytest.raises(ValueError):
        sample(backbone.eps, z, levels, mask=torch.ones(1, 1, 64, 64, dtype=torch.bool))
    with pytest.raises(ValueError):
        sample(backbone.eps, z, levels, torch.ones(1, 1, 64, 64, dtype=torch.bool), [z])
