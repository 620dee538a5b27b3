"""Backbones made of diffusers models: a UNet2DModel, optionally with a VQ or KL autoencoder.

One class covers both the latent models (CompVis/ldm-celebahq-256: UNet + VQModel) and the
pixel-space ones (google/ddpm-ema-celebahq-256: UNet only, encode = decode = identity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from faceanon.diffusion.schedule import NoiseSchedule
from faceanon.errors import ModelUnavailableError


def exact_float32_on_gpu() -> None:
    """No TF32 in convolutions and matrix products (PyTorch allows it in cuDNN convolutions by
    default): a face anonymized on a GPU must see the same eps when restored on a CPU."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "conv"):  # torch >= 2.9
        matmul.fp32_precision = "ieee"
        conv.conv.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False
        conv.allow_tf32 = False


class DiffusersBackbone:
    """``channels_last``: the networks run in NHWC memory layout, the same float32 math (about
    1.3x faster UNet calls reported on an Intel Xeon with AVX-512; no gain on an AMD EPYC)."""

    def __init__(
        self,
        unet: Any,
        autoencoder: Any | None,
        schedule: NoiseSchedule,
        *,
        name: str,
        revision: str | None = None,
        latent_scale: float = 1.0,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
    ) -> None:
        self.name, self.revision = name, revision
        self.device = torch.device(device)
        if self.device.type == "cuda":
            exact_float32_on_gpu()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.unet = self._prepare(unet)
        self.autoencoder = None if autoencoder is None else self._prepare(autoencoder)
        self.schedule = schedule
        self.latent_scale = latent_scale
        size = int(unet.config.sample_size)
        self.latent_shape = (int(unet.config.in_channels), size, size)
        if autoencoder is None:
            self.image_size = size
        else:
            self.image_size = size * 2 ** (len(autoencoder.config.block_out_channels) - 1)

    def _prepare(self, model: Any) -> Any:
        return model.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.memory_format)

    def _is_vq(self) -> bool:
        return hasattr(self.autoencoder, "quantize")

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return images.to(self.device)
        images = self._input(images)
        if self._is_vq():
            # Pre-quantisation latents, as the LDM was trained on.
            latents: torch.Tensor = self.autoencoder.encode(images).latents
        else:
            latents = self.autoencoder.encode(images).latent_dist.mean
        return (latents * self.latent_scale).contiguous()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return latents
        images: torch.Tensor = self.autoencoder.decode(
            self._input(latents / self.latent_scale)
        ).sample
        return images.clamp(-1, 1).contiguous()

    @torch.inference_mode()
    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        t = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=self.device)
        out: torch.Tensor = self.unet(self._input(latents), t).sample
        # Models with a learned variance output 2c channels; the first c are eps.
        return out[:, : latents.shape[1]].contiguous()


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def load_folder(
    folder: Path,
    *,
    name: str | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> DiffusersBackbone:
    """Load a diffusers-format model folder.

    Latent models: ``unet/`` + ``vqvae/`` (VQModel) or ``vae/`` (AutoencoderKL) + ``scheduler/``.
    Pixel models: ``unet/`` or a UNet at the top level, and ``scheduler_config.json`` in
    ``scheduler/`` or at the top level.
    """
    from diffusers import AutoencoderKL, UNet2DModel, VQModel

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelUnavailableError(f"{folder}: model folder not found")
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    scheduler_file = next(
        (
            p
            for p in (
                folder / "scheduler" / "scheduler_config.json",
                folder / "scheduler_config.json",
            )
            if p.is_file()
        ),
        None,
    )
    if not (unet_dir / "config.json").is_file() or scheduler_file is None:
        raise ModelUnavailableError(
            f"{folder}: not a diffusers model folder (needs unet/config.json or config.json, "
            "and scheduler/scheduler_config.json)"
        )
    try:
        schedule = NoiseSchedule.from_config(_read_json(scheduler_file))
        unet = UNet2DModel.from_pretrained(unet_dir)
        autoencoder: Any | None = None
        latent_scale = 1.0
        if (folder / "vqvae" / "config.json").is_file():
            # CompVis VQ latents are used unscaled: the config's scaling_factor (a diffusers
            # default) does not apply to these models (diffusers issue #6725).
            autoencoder = VQModel.from_pretrained(folder / "vqvae")
        elif (folder / "vae" / "config.json").is_file():
            autoencoder = AutoencoderKL.from_pretrained(folder / "vae")
            latent_scale = float(autoencoder.config.scaling_factor)
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"{folder}: cannot load model: {first}") from None
    return DiffusersBackbone(
        unet,
        autoencoder,
        schedule,
        name=name or folder.name,
        revision=revision,
        latent_scale=latent_scale,
        device=device,
    )
