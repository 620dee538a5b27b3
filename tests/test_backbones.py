"""Backbone loading: built-in tiny model, diffusers folders (latent and pixel), offline errors."""

from __future__ import annotations

import json

import pytest
import torch

from faceanon.backbones.base import Backbone
from faceanon.backbones.builtin import build_backbone, build_components
from faceanon.backbones.diffusers_backbone import load_folder
from faceanon.backbones.registry import MODELS, load_backbone
from faceanon.errors import ModelUnavailableError

SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": True,
}


def _save_latent_folder(path):
    unet, vq = build_components("tiny", seed=3)
    unet.save_pretrained(path / "unet")
    vq.save_pretrained(path / "vqvae")
    (path / "scheduler").mkdir()
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    return unet, vq


def test_tiny_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_backbone("tiny", seed=0)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_backbone("tiny", seed=0)
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert isinstance(a, Backbone)
    assert (a.image_size, a.latent_shape) == (256, (3, 64, 64))


def test_load_latent_folder_matches_the_saved_model(tmp_path):
    unet, vq = _save_latent_folder(tmp_path)
    backbone = load_backbone("mine", model_dir=tmp_path)
    assert backbone.image_size == 256 and backbone.latent_shape == (3, 64, 64)
    assert backbone.schedule.levels(50).timesteps[-1] == 980
    z = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = unet(z, torch.full((2,), 500)).sample
        x = torch.rand(1, 3, 256, 256) * 2 - 1
        expected_latent = vq.encode(x).latents
    torch.testing.assert_close(backbone.eps(z, 500), expected)
    torch.testing.assert_close(backbone.encode(x), expected_latent)
    with torch.inference_mode():
        quantized = vq.quantize(expected_latent)[0]
        unquantized = vq.decode(expected_latent, force_not_quantize=True).sample.clamp(-1, 1)
    # Decoding quantizes first, as CompVis' LDM and diffusers' LDMPipeline do: the latent and
    # its nearest codebook entries decode to the same image, unlike the raw latent.
    decoded = backbone.decode(expected_latent)
    torch.testing.assert_close(decoded, backbone.decode(quantized), rtol=0, atol=2e-4)
    assert (decoded - unquantized).abs().max() > 1e-2
    assert decoded.min() >= -1 and decoded.max() <= 1 and decoded.std() > 1e-3


def test_channels_last_changes_speed_not_results():
    from faceanon.backbones.closed_form import reference_schedule
    from faceanon.backbones.diffusers_backbone import DiffusersBackbone

    plain, fast = (
        DiffusersBackbone(
            *build_components("tiny"), reference_schedule(), name="t", channels_last=c
        )
        for c in (False, True)
    )
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = plain.encode(x)
    torch.testing.assert_close(fast.encode(x), z, rtol=0, atol=1e-4)
    torch.testing.assert_close(fast.eps(z, 300), plain.eps(z, 300), rtol=0, atol=1e-4)
    torch.testing.assert_close(fast.decode(z), plain.decode(z), rtol=0, atol=1e-3)
    assert fast.eps(z, 300).is_contiguous() and fast.decode(z).is_contiguous()


def test_gpu_float32_is_exact():
    from faceanon.backbones.diffusers_backbone import exact_float32_on_gpu

    exact_float32_on_gpu()  # the settings exist without a GPU; CUDA backbones call this
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        assert matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    else:
        assert not matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_load_pixel_folder(tmp_path):
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=32,
            block_out_channels=(8, 16),
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            layers_per_block=1,
        )
    unet.save_pretrained(tmp_path)  # a UNet at the top level, like google/ddpm-ema-celebahq-256
    (tmp_path / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02})
    )
    backbone = load_folder(tmp_path)
    assert (backbone.image_size, backbone.latent_shape) == (32, (3, 32, 32))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(backbone.encode(x), x) and torch.equal(backbone.decode(x), x)


@pytest.mark.parametrize(
    "layout", ["missing", "empty", "no-scheduler", "broken-weights", "v-prediction", "zero-snr"]
)
def test_bad_model_folders_give_one_line(tmp_path, layout):
    folder = tmp_path / "model"
    if layout != "missing":
        folder.mkdir()
    if layout in ("no-scheduler", "broken-weights"):
        _save_latent_folder(folder)
    if layout == "no-scheduler":
        (folder / "scheduler" / "scheduler_config.json").unlink()
    # Scheduler flags the engine does not implement: refused, naming the flag.
    flag, value = {
        "v-prediction": ("prediction_type", "v_prediction"),
        "zero-snr": ("rescale_betas_zero_snr", True),
    }.get(layout, (None, None))
    if flag:
        _save_latent_folder(folder)
        config = {**SCHEDULER, flag: value}
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    if layout == "broken-weights":
        weights = next((folder / "unet").glob("diffusion_pytorch_model.*"))
        weights.write_bytes(b"not weights")
    with pytest.raises(ModelUnavailableError) as info:
        load_backbone("x", model_dir=folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    if flag:
        assert flag in str(info.value)


def test_default_backbone_offline_says_how_to_get_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as info:
        load_backbone("ldm-celebahq-256", cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "CompVis/ldm-celebahq-256" in message and "--model-dir" in message
    assert "--backbone face-prior" in message and MODELS["ldm-celebahq-256"].revision in message


def test_registry_entries_and_unknown_name():
    default = MODELS["ldm-celebahq-256"]
    assert default.hub_id == "CompVis/ldm-celebahq-256"
    assert default.revision is not None and len(default.revision) == 40
    with pytest.raises(ModelUnavailableError, match="unknown backbone"):
        load_backbone("no-such-model")
    assert load_backbone("closed-form").name == "closed-form"


def test_any_hub_id_offline_names_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError, match="someone/faces-ldm") as info:
        load_backbone("someone/faces-ldm@0123abc", cache_dir=tmp_path)
    assert "--revision 0123abc" in str(info.value)
