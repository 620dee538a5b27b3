"""The paper authors' mask-guided ControlNet (journal version), rebuilt to load their weights.

Labarbarie et al. condition the FFHQ LDM UNet on a hint image (the binary face mask at 256 x 256,
or 5 / 26 landmarks drawn as small squares, 3 channels) with a ControlNet of their own design
(``anonymization/controlnet.py`` of ``PLabarbarie/diffusion-signflip-anon``). This module has
the same attribute names, so their ``controlnet_epoch_15.pth`` state dicts load with
``strict=True`` and their key names unchanged, and the same forward pass, quirks included:

- the time embedding is the base UNet's (``time_proj`` / ``time_embedding`` are the base UNet's
  modules, registered a second time under those names); the control copy's own is unused;
- the hint block: conv 3 -> 16 + SiLU; per halving of the hint (``log2(hint / latent)``
  times) a stride-2 conv doubling the channels, SiLU, a conv; then a conv to the first block's
  width, SiLU and a 1 x 1 zero conv. Its output is added to the control copy's ``conv_in(x)``;
- zero convs (1 x 1) only on the *resnet* outputs of each control down block; the control copy's
  first skip (``conv_in(x) + hint``) and its downsamplers' outputs are added to the base UNet's
  skips as they are. So their zero-initialised ControlNet does not start as the base UNet;
- the control mid block passes a zero conv and is added to the base mid block's output; the base
  decoder then runs on skips + control skips.

``eps`` without a hint is the base UNet's (the authors invert with it); faceanon runs both
directions through the ControlNet with the same hint, so that de-anonymization inverts exactly
what anonymization sampled.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def hint_block(channels: int, factor: int, hint_channels: int = 3) -> nn.Sequential:
    """The authors' hint encoder: ``factor`` (a power of two) = hint side / latent side."""
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f"hint downsampling factor must be a power of two, got {factor}")
    width = 16
    first = nn.Conv2d(hint_channels, width, 3, padding=1)
    layers: list[nn.Module] = [nn.Sequential(first, nn.SiLU())]
    for _ in range(int(math.log2(factor))):
        layers.append(
            nn.Sequential(
                nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
                nn.SiLU(),
                nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            )
        )
        width *= 2
    layers.append(
        nn.Sequential(
            nn.Conv2d(width, channels, 3, padding=1),
            nn.SiLU(),
            _zero(nn.Conv2d(channels, channels, 1)),
        )
    )
    return nn.Sequential(*layers)


class SignflipControlNet(nn.Module):
    """Base UNet (``trained_unet``) + trainable copy (``control_copy_unet``) + hint block and
    zero convs, in the authors' layout. ``base`` and ``copy`` are diffusers ``UNet2DModel``s of
    the same config (the copy is the base's weights when training starts)."""

    def __init__(self, base: Any, copy: Any, hint_factor: int) -> None:
        super().__init__()
        self.trained_unet = base
        self.control_copy_unet = copy
        self.time_proj = base.time_proj
        self.time_embedding = base.time_embedding
        widths = list(base.config.block_out_channels)
        self.control_copy_unet_hint_block = hint_block(widths[0], hint_factor)
        self.control_copy_unet_down_zero_convs = nn.ModuleList(
            _zero(nn.Conv2d(widths[i], widths[i], 1))
            for i, block in enumerate(base.down_blocks)
            for _ in block.resnets
        )
        self.control_copy_unet_mid_zero_conv = _zero(nn.Conv2d(widths[-1], widths[-1], 1))

    def controls(
        self, x: torch.Tensor, emb: torch.Tensor, hint: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The control copy's residuals: one per base skip, and one for the mid block."""
        copy = self.control_copy_unet
        h = copy.conv_in(x) + self.control_copy_unet_hint_block(hint)
        skips = [h]
        zero = iter(self.control_copy_unet_down_zero_convs)
        for block in copy.down_blocks:
            h, res = block(h, emb)
            n = len(block.resnets)
            skips += [next(zero)(r) if j < n else r for j, r in enumerate(res)]
        return skips, self.control_copy_unet_mid_zero_conv(copy.mid_block(h, emb))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        base = self.trained_unet
        t = timestep.to(x.device).expand(x.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(x.dtype))
        h = base.conv_in(x)
        skips = [h]
        for block in base.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips += list(res)
        h = base.mid_block(h, emb)
        control, mid = self.controls(x, emb, hint)
        h = h + mid
        for block in base.up_blocks:
            n = len(block.resnets)
            res = tuple(s + c for s, c in zip(skips[-n:], control[-n:], strict=True))
            skips, control = skips[:-n], control[:-n]
            h = block(h, res, emb)
        out: torch.Tensor = base.conv_out(base.conv_act(base.conv_norm_out(h)))
        return out


class ControlNetBackbone:
    """A latent backbone whose noise predictor is :class:`SignflipControlNet`: ``hints`` makes
    the hint of each crop (:class:`faceanon.faces.hints.HintMaker`), ``eps(z, t, hint)`` uses it."""

    def __init__(self, inner: Any, controlnet: SignflipControlNet, conditioning: str) -> None:
        from faceanon.faces.hints import HintMaker

        self.inner = inner  # a DiffusersBackbone of the base UNet and the VQ autoencoder
        self.name, self.revision = inner.name, inner.revision
        self.image_size, self.latent_shape = inner.image_size, inner.latent_shape
        self.schedule, self.device = inner.schedule, inner.device
        self.conditioning = conditioning
        self.controlnet = inner._prepare(controlnet)
        self.hints = HintMaker(conditioning, self.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner.encode(images)
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner.decode(latents)
        return out

    @torch.inference_mode()
    def eps(
        self, latents: torch.Tensor, timestep: int, hint: torch.Tensor | None = None
    ) -> torch.Tensor:
        if hint is None:  # the base UNet, as the authors' inversion uses
            out: torch.Tensor = self.inner.eps(latents, timestep)
            return out
        t = torch.tensor(timestep, dtype=torch.long, device=self.device)
        x = self.inner._input(latents)
        h = self.inner._input(hint.to(device=self.device, dtype=latents.dtype))
        out = self.controlnet(x, t, h)
        return out[:, : latents.shape[1]].contiguous()
