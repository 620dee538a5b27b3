"""Backbones built from a config with random weights, no download: tiny (tests, smoke runs) and
the reference-size architecture of METHOD §2 (benchmarks: speed of the real network)."""

from __future__ import annotations

from typing import Any

import torch

from faceanon.backbones.closed_form import reference_schedule
from faceanon.backbones.diffusers_backbone import DiffusersBackbone

# CompVis/ldm-celebahq-256 and CompVis's FFHQ LDM (configs/latent-diffusion/*-ldm-vq-4.yaml, the
# same architecture): UNet 274 M (224/448/672/896, attention at the three lower levels, head dim
# 32) and the VQ-f4 autoencoder 55 M (128/256/512, 8192 codes, 3 latent channels).
LDM_F4_UNET = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": (224, 448, 672, 896),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 32,
}
LDM_F4_VQ = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 3,
    "block_out_channels": (128, 256, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "layers_per_block": 2,
    "num_vq_embeddings": 8192,
    "vq_embed_dim": 3,
}
_TINY_UNET = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": (16, 32),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
_TINY_VQ = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 3,
    "block_out_channels": (8, 8, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "num_vq_embeddings": 64,
    "vq_embed_dim": 3,
}


def build_components(size: str, seed: int = 0) -> tuple[Any, Any]:
    """(UNet2DModel, VQModel) with weights drawn under ``seed``; the global RNG is restored."""
    from diffusers import UNet2DModel, VQModel

    unet_cfg, vq_cfg = {
        "tiny": (_TINY_UNET, _TINY_VQ),
        "reference": (LDM_F4_UNET, LDM_F4_VQ),
    }[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**unet_cfg), VQModel(**vq_cfg)


def build_backbone(
    size: str, device: str | torch.device = "cpu", seed: int = 0
) -> DiffusersBackbone:
    unet, vq = build_components(size, seed)
    name = {"tiny": "tiny", "reference": "reference-random"}[size]
    return DiffusersBackbone(
        unet, vq, reference_schedule(), name=name, revision=f"seed{seed}", device=device
    )
