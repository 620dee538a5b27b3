"""A tiny CompVis openaimodel UNet, written from the architecture for the tests: its weights in
CompVis key names and its forward pass, so that faceanon's key conversion can be checked
against the network it claims to reproduce (not against its own inverse)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The diffusers config the tiny CompVis network corresponds to: three levels, two blocks each,
# attention at the two lower levels with 8-channel heads (2, 4 and 6 heads: the head-by-head
# qkv layout matters), an odd channel change at every level.
CONFIG = {
    "sample_size": 16,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": (16, 32, 48),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
GROUPS = 8
HEAD = 8


class Weights(dict[str, torch.Tensor]):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def rand(self, *shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * scale

    def conv(self, name: str, cin: int, cout: int, k: int, dims: int = 2) -> None:
        shape = (cout, cin) + (k,) * dims
        self[f"{name}.weight"] = self.rand(*shape, scale=1 / math.sqrt(cin * k**dims))
        self[f"{name}.bias"] = self.rand(cout, scale=0.1)

    def linear(self, name: str, cin: int, cout: int) -> None:
        self[f"{name}.weight"] = self.rand(cout, cin, scale=1 / math.sqrt(cin))
        self[f"{name}.bias"] = self.rand(cout, scale=0.1)

    def norm(self, name: str, c: int) -> None:
        self[f"{name}.weight"] = 1 + self.rand(c, scale=0.2)
        self[f"{name}.bias"] = self.rand(c, scale=0.2)

    def resblock(self, name: str, cin: int, cout: int, temb: int) -> None:
        self.norm(f"{name}.in_layers.0", cin)
        self.conv(f"{name}.in_layers.2", cin, cout, 3)
        self.linear(f"{name}.emb_layers.1", temb, cout)
        self.norm(f"{name}.out_layers.0", cout)
        self.conv(f"{name}.out_layers.3", cout, cout, 3)
        if cin != cout:
            self.conv(f"{name}.skip_connection", cin, cout, 1)

    def attention(self, name: str, c: int) -> None:
        self.norm(f"{name}.norm", c)
        self.conv(f"{name}.qkv", c, 3 * c, 1, dims=1)
        self.conv(f"{name}.proj_out", c, c, 1, dims=1)


def _levels() -> list[tuple[int, bool]]:
    return [
        (c, t.startswith("Attn"))
        for c, t in zip(CONFIG["block_out_channels"], CONFIG["down_block_types"], strict=True)
    ]


def make_weights(seed: int = 0) -> Weights:
    """Random weights in CompVis names (``input_blocks.1.0.in_layers.0.weight``, ...)."""
    w = Weights(seed)
    base = CONFIG["block_out_channels"][0]
    temb = 4 * base
    w.linear("time_embed.0", base, temb)
    w.linear("time_embed.2", temb, temb)
    w.conv("input_blocks.0.0", 3, base, 3)
    chans, ch, k = [base], base, 1
    levels = _levels()
    for level, (c, attn) in enumerate(levels):
        for _ in range(CONFIG["layers_per_block"]):
            w.resblock(f"input_blocks.{k}.0", ch, c, temb)
            if attn:
                w.attention(f"input_blocks.{k}.1", c)
            ch = c
            chans.append(ch)
            k += 1
        if level < len(levels) - 1:
            w.conv(f"input_blocks.{k}.0.op", ch, ch, 3)
            chans.append(ch)
            k += 1
    w.resblock("middle_block.0", ch, ch, temb)
    w.attention("middle_block.1", ch)
    w.resblock("middle_block.2", ch, ch, temb)
    k = 0
    for level in reversed(range(len(levels))):
        c, attn = levels[level]
        for j in range(CONFIG["layers_per_block"] + 1):
            w.resblock(f"output_blocks.{k}.0", ch + chans.pop(), c, temb)
            ch = c
            if attn:
                w.attention(f"output_blocks.{k}.1", c)
            if level > 0 and j == CONFIG["layers_per_block"]:
                w.conv(f"output_blocks.{k}.{2 if attn else 1}.conv", c, c, 3)
            k += 1
    w.norm("out.0", ch)
    w.conv("out.2", ch, 3, 3)
    return w


def _gn(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.group_norm(x, GROUPS, w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)


def _conv(x: torch.Tensor, w: dict[str, torch.Tensor], name: str, **kw: int) -> torch.Tensor:
    return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], **kw)


def _res(x: torch.Tensor, emb: torch.Tensor, w: dict[str, torch.Tensor], n: str) -> torch.Tensor:
    h = _conv(F.silu(_gn(x, w, f"{n}.in_layers.0")), w, f"{n}.in_layers.2", padding=1)
    h = (
        h
        + F.linear(F.silu(emb), w[f"{n}.emb_layers.1.weight"], w[f"{n}.emb_layers.1.bias"])[
            :, :, None, None
        ]
    )
    h = _conv(F.silu(_gn(h, w, f"{n}.out_layers.0")), w, f"{n}.out_layers.3", padding=1)
    skip = _conv(x, w, f"{n}.skip_connection") if f"{n}.skip_connection.weight" in w else x
    return skip + h


def _attn(x: torch.Tensor, w: dict[str, torch.Tensor], n: str) -> torch.Tensor:
    b, c, height, width = x.shape
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(_gn(flat, w, f"{n}.norm"), w[f"{n}.qkv.weight"], w[f"{n}.qkv.bias"])
    heads = c // HEAD
    q, k, v = qkv.reshape(b * heads, 3 * HEAD, -1).split(HEAD, dim=1)  # QKVAttentionLegacy
    scale = 1 / math.sqrt(math.sqrt(HEAD))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    h = F.conv1d(a, w[f"{n}.proj_out.weight"], w[f"{n}.proj_out.bias"])
    return (flat + h).reshape(b, c, height, width)


def forward(w: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """openaimodel.UNetModel.forward for this configuration (no class labels, no context)."""
    base = CONFIG["block_out_channels"][0]
    half = base // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    emb = F.linear(temb, w["time_embed.0.weight"], w["time_embed.0.bias"])
    emb = F.linear(F.silu(emb), w["time_embed.2.weight"], w["time_embed.2.bias"])
    h = _conv(x, w, "input_blocks.0.0", padding=1)
    hs = [h]
    k = 1
    levels = _levels()
    for level, (_, attn) in enumerate(levels):
        for _ in range(CONFIG["layers_per_block"]):
            h = _res(h, emb, w, f"input_blocks.{k}.0")
            if attn:
                h = _attn(h, w, f"input_blocks.{k}.1")
            hs.append(h)
            k += 1
        if level < len(levels) - 1:
            h = _conv(h, w, f"input_blocks.{k}.0.op", stride=2, padding=1)
            hs.append(h)
            k += 1
    h = _res(h, emb, w, "middle_block.0")
    h = _attn(h, w, "middle_block.1")
    h = _res(h, emb, w, "middle_block.2")
    k = 0
    for level in reversed(range(len(levels))):
        _, attn = levels[level]
        for j in range(CONFIG["layers_per_block"] + 1):
            h = _res(torch.cat([h, hs.pop()], dim=1), emb, w, f"output_blocks.{k}.0")
            if attn:
                h = _attn(h, w, f"output_blocks.{k}.1")
            if level > 0 and j == CONFIG["layers_per_block"]:
                up = F.interpolate(h, scale_factor=2, mode="nearest")
                h = _conv(up, w, f"output_blocks.{k}.{2 if attn else 1}.conv", padding=1)
            k += 1
    return _conv(F.silu(_gn(h, w, "out.0")), w, "out.2", padding=1)
