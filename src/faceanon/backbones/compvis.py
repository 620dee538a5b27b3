"""CompVis latent-diffusion checkpoints (``model.ckpt``) as diffusers models.

CompVis's LDMs (``ldm.modules.diffusionmodules.openaimodel.UNetModel``) are published as
PyTorch Lightning checkpoints; faceanon runs them as a diffusers ``UNet2DModel``. The key map
(written for faceanon from the two architectures, not taken from a converter):

- ``time_embed.0 / .2`` -> ``time_embedding.linear_1 / _2``; ``input_blocks.0.0`` -> ``conv_in``;
  ``out.0 / .2`` -> ``conv_norm_out / conv_out``;
- ``input_blocks.k``, k = 1, 2, ...: per level, ``layers_per_block`` blocks of a ResBlock (``.0``)
  and, at attention levels, an AttentionBlock (``.1``), then (except the last level) one
  Downsample (``.0.op``);
- ``middle_block.0 / .1 / .2`` -> ``mid_block.resnets.0 / attentions.0 / resnets.1``;
- ``output_blocks.k``: per level from the deepest, ``layers_per_block + 1`` blocks of a ResBlock,
  an AttentionBlock at attention levels, and on the level's last block (except the shallowest
  level) an Upsample (``.conv``) after them;
- ResBlock: ``in_layers.0 / .2`` -> ``norm1 / conv1``, ``emb_layers.1`` -> ``time_emb_proj``,
  ``out_layers.0 / .3`` -> ``norm2 / conv2``, ``skip_connection`` -> ``conv_shortcut``;
- AttentionBlock: ``norm`` -> ``group_norm``; ``qkv`` (a 1x1 Conv1d of 3C channels, laid out
  head by head as [q_h, k_h, v_h] of ``head_channels`` each: openaimodel's
  ``QKVAttentionLegacy``) -> ``to_q / to_k / to_v``; ``proj_out`` -> ``to_out.0``.

Every key of the checkpoint's UNet is used exactly once and every parameter of the diffusers
model is set, or loading fails with one line naming the key.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from faceanon.errors import ModelUnavailableError

UNET_PREFIX = "model.diffusion_model."

_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


class _Inert:
    """Stands in for a class a checkpoint names outside its weights (a Lightning callback, an
    optimizer's settings): built without running any code of that class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _inert(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A ``.ckpt`` / ``.pth`` / ``.bin`` file with ``torch.load(weights_only=True)``.

    Lightning checkpoints also pickle objects that are not weights (callbacks, hyper-parameter
    containers); weights-only unpickling refuses them. Those classes are replaced by inert
    stand-ins (:class:`_Inert`, no code of theirs is imported or run) and the file is read
    again; the weights themselves are only ever tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: checkpoint file not found")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            with torch.serialization.safe_globals([_inert(n) for n in names]):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file can break the unpickler in any way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(
            f"{path}: not a readable PyTorch checkpoint ({first})"
        ) from None
    if not isinstance(data, dict):
        raise ModelUnavailableError(f"{path}: not a PyTorch checkpoint (holds a {type(data)})")
    return data


def unet_state_dict(checkpoint: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The UNet's weights in CompVis names (``input_blocks.0.0.weight``, ...): from a Lightning
    checkpoint's ``state_dict`` (keys ``model.diffusion_model.*``, the weights diffusers' own
    conversion of the CompVis models uses) or a bare UNet state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ModelUnavailableError(f"{path}: its state_dict is not a mapping")
    unet = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    if not unet and "input_blocks.0.0.weight" in state:
        unet = dict(state)
    if not unet:
        raise ModelUnavailableError(
            f"{path}: no CompVis UNet in this checkpoint (no {UNET_PREFIX}* keys)"
        )
    bad = next((k for k, v in unet.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ModelUnavailableError(f"{path}: {bad} is not a tensor")
    return unet


class _Keys:
    """Moves CompVis keys to diffusers names, each exactly once."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.source = dict(state)
        self.out: dict[str, torch.Tensor] = {}

    def take(self, old: str) -> torch.Tensor:
        if old not in self.source:
            raise KeyError(old)
        return self.source.pop(old)

    def move(self, old: str, new: str) -> None:
        for kind in ("weight", "bias"):
            self.out[f"{new}.{kind}"] = self.take(f"{old}.{kind}")

    def resnet(self, old: str, new: str) -> None:
        for src, dst in _RESNET.items():
            if src == "skip_connection" and f"{old}.{src}.weight" not in self.source:
                continue  # same channels in and out: an identity skip
            self.move(f"{old}.{src}", f"{new}.{dst}")

    def attention(self, old: str, new: str, head_channels: int) -> None:
        self.move(f"{old}.norm", f"{new}.group_norm")
        for kind in ("weight", "bias"):
            qkv = self.take(f"{old}.qkv.{kind}")
            channels = qkv.shape[0] // 3
            heads = channels // head_channels
            per_head = qkv.reshape(heads, 3, head_channels, *qkv.shape[1:])
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                part = per_head[:, i].reshape(channels, *qkv.shape[1:])
                self.out[f"{new}.{name}.{kind}"] = part[..., 0] if part.ndim == 3 else part
            proj = self.take(f"{old}.proj_out.{kind}")
            self.out[f"{new}.to_out.0.{kind}"] = proj[..., 0] if proj.ndim == 3 else proj


def convert_unet(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    """CompVis UNetModel weights -> the state dict of ``UNet2DModel(**config)``.

    Raises KeyError naming a CompVis key the architecture needs but the weights lack, and
    ValueError naming the first key left over.
    """
    levels = len(config["block_out_channels"])
    per_level = int(config["layers_per_block"])
    head = int(config["attention_head_dim"])
    down_attn = [t.startswith("Attn") for t in config["down_block_types"]]
    up_attn = [t.startswith("Attn") for t in config["up_block_types"]]
    keys = _Keys(state)
    keys.move("time_embed.0", "time_embedding.linear_1")
    keys.move("time_embed.2", "time_embedding.linear_2")
    keys.move("input_blocks.0.0", "conv_in")
    block = 1
    for level in range(levels):
        for j in range(per_level):
            keys.resnet(f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}")
            if down_attn[level]:
                keys.attention(
                    f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{j}", head
                )
            block += 1
        if level < levels - 1:
            keys.move(f"input_blocks.{block}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
            block += 1
    keys.resnet("middle_block.0", "mid_block.resnets.0")
    keys.attention("middle_block.1", "mid_block.attentions.0", head)
    keys.resnet("middle_block.2", "mid_block.resnets.1")
    block = 0
    for up in range(levels):
        for j in range(per_level + 1):
            keys.resnet(f"output_blocks.{block}.0", f"up_blocks.{up}.resnets.{j}")
            if up_attn[up]:
                keys.attention(f"output_blocks.{block}.1", f"up_blocks.{up}.attentions.{j}", head)
            if up < levels - 1 and j == per_level:
                index = 2 if up_attn[up] else 1
                keys.move(
                    f"output_blocks.{block}.{index}.conv", f"up_blocks.{up}.upsamplers.0.conv"
                )
            block += 1
    keys.move("out.0", "conv_norm_out")
    keys.move("out.2", "conv_out")
    if keys.source:
        raise ValueError(f"unexpected key {sorted(keys.source)[0]}")
    return keys.out


def load_unet(path: Path, config: Mapping[str, Any]) -> Any:
    """A diffusers ``UNet2DModel`` with the weights of a CompVis checkpoint file."""
    from diffusers import UNet2DModel

    path = Path(path)
    state = unet_state_dict(read_checkpoint(path), path)
    try:
        converted = convert_unet(state, config)
    except KeyError as exc:
        raise ModelUnavailableError(
            f"{path}: not the expected LDM UNet (no weight {exc.args[0]})"
        ) from None
    except ValueError as exc:
        raise ModelUnavailableError(f"{path}: not the expected LDM UNet ({exc})") from None
    unet = UNet2DModel(**config)
    try:
        unet.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        detail = re.sub(r"\s+", " ", str(exc))[:200]
        raise ModelUnavailableError(f"{path}: weights do not fit the LDM UNet ({detail})") from None
    return unet.eval()
