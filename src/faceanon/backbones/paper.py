"""The paper authors' models: CompVis's FFHQ LDM and their three mask-guided ControlNets.

Where each piece comes from (``faceanon models`` prints this):

- the FFHQ UNet: the authors' diffusers conversion (``ffhq-diffusers/unet`` in the Hugging Face
  repo ``PolLabarbarie/diffusion-signflip-anon-face``, MIT), or CompVis's own checkpoint
  (``model.ckpt`` of https://ommer-lab.com/files/latent-diffusion/ffhq.zip, config
  ``configs/latent-diffusion/ffhq-ldm-vq-4.yaml``), converted by
  :mod:`faceanon.backbones.compvis`; a ControlNet checkpoint holds its base UNet too
  (``trained_unet.*``), so the ControlNets need no separate UNet;
- the VQ-f4 autoencoder: ``ffhq-diffusers/vqvae`` of the same repo, else the one of
  ``CompVis/ldm-celebahq-256`` (both LDMs were trained on the same frozen first stage);
- the schedule: the FFHQ config's (1000 steps, scaled-linear betas 0.0015 -> 0.0195, which is
  also ``CompVis/ldm-celebahq-256``'s ``scheduler_config.json``); latents unscaled;
- the ControlNets: ``controlnet_epoch_15.pth`` for ``segmentation_masks``, ``landmarks_5`` and
  ``landmarks_26`` (the Hugging Face repo holds the segmentation-mask one; the others where the
  authors provide them, in their ``weights/ffhq_controlnet/<conditioning>/`` layout).

``--model-dir DIR`` may hold any of these in the authors' layout (``weights/models/ffhq-diffusers``,
``weights/ffhq_controlnet/<conditioning>/controlnet_epoch_15.pth``), a Hugging Face snapshot
of their repo, CompVis's ``model.ckpt`` (or be that file); files are found by name below DIR.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import ModelUnavailableError

if TYPE_CHECKING:
    import torch

    from faceanon.backbones.base import Backbone

HUB_ID = "PolLabarbarie/diffusion-signflip-anon-face"
CONTROLNET_FILE = "controlnet_epoch_15.pth"
COMPVIS_FILE = "model.ckpt"
DIFFUSERS_DIR = "ffhq-diffusers"
# The UNet of a CompVis checkpoint: None is ffhq-ldm-vq-4.yaml in diffusers terms
# (builtin.LDM_F4_UNET); the tests set a tiny one.
UNET_CONFIG: dict[str, Any] | None = None
CONDITIONING = {
    "ldm-ffhq-256": None,
    "ffhq-controlnet-mask": "segmentation_masks",
    "ffhq-controlnet-landmarks5": "landmarks_5",
    "ffhq-controlnet-landmarks26": "landmarks_26",
}
# What to download from HUB_ID for each (the ControlNets carry their base UNet).
HUB_FILES = {
    "ldm-ffhq-256": ("ffhq-diffusers/unet/*", "ffhq-diffusers/vqvae/*"),
    "ffhq-controlnet-mask": ("ffhq-diffusers/vqvae/*", f"*{CONTROLNET_FILE}"),
    "ffhq-controlnet-landmarks5": ("ffhq-diffusers/vqvae/*", f"*{CONTROLNET_FILE}"),
    "ffhq-controlnet-landmarks26": ("ffhq-diffusers/vqvae/*", f"*{CONTROLNET_FILE}"),
}
_MAX_DEPTH = 6


def _below(root: Path, name: str) -> list[Path]:
    """Paths named ``name`` at most _MAX_DEPTH folders below ``root`` (root itself included)."""
    if root.name == name:
        return [root]
    found: list[Path] = []
    for path in sorted(root.rglob(name)):
        if len(path.relative_to(root).parts) <= _MAX_DEPTH:
            found.append(path)
    return found


def _diffusers_dir(root: Path, part: str) -> Path | None:
    """``<root>/**/ffhq-diffusers/<part>`` (or ``<root>/<part>``) holding a config.json."""
    candidates = [d / part for d in _below(root, DIFFUSERS_DIR) if d.is_dir()] + [root / part]
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def controlnet_file(root: Path, conditioning: str) -> Path:
    """The checkpoint of one conditioning below ``root``: ``<conditioning>/controlnet_epoch_15.pth``
    (the authors' layout), else, for the segmentation masks (the one the Hugging Face repo
    holds), a single ``controlnet_epoch_15.pth`` anywhere; or ``root`` itself if it is a file."""
    if root.is_file():
        return root
    files = [p for p in _below(root, CONTROLNET_FILE) if p.is_file()]
    named = [p for p in files if p.parent.name == conditioning]
    if named:
        return named[0]
    if (
        conditioning == "segmentation_masks"
        and len(files) == 1
        and files[0].parent.name
        not in (
            "landmarks_5",
            "landmarks_26",
        )
    ):
        return files[0]
    raise ModelUnavailableError(
        f"{root}: no {conditioning}/{CONTROLNET_FILE} (the authors' ControlNet for"
        f" {conditioning}); see `faceanon models`"
    )


def _vq(root: Path, fallback: Callable[[], Path] | None) -> Any:
    from diffusers import VQModel

    folder = _diffusers_dir(root, "vqvae")
    if folder is None:
        if fallback is None:
            raise ValueError("no vqvae/ folder beside the model")
        folder = fallback()
    return VQModel.from_pretrained(folder)


def _compvis_config() -> dict[str, Any]:
    from faceanon.backbones import builtin

    return dict(builtin.LDM_F4_UNET if UNET_CONFIG is None else UNET_CONFIG)


def _unet(root: Path) -> Any:
    """The FFHQ UNet from a CompVis checkpoint (the file, or ``model.ckpt`` below ``root``) or
    the diffusers conversion (``ffhq-diffusers/unet``)."""
    from diffusers import UNet2DModel

    from faceanon.backbones.compvis import load_unet

    if root.is_file():
        return load_unet(root, _compvis_config())
    folder = _diffusers_dir(root, "unet")
    if folder is not None:
        return UNet2DModel.from_pretrained(folder)
    ckpt = next((p for p in _below(root, COMPVIS_FILE) if p.is_file()), None)
    if ckpt is not None:
        return load_unet(ckpt, _compvis_config())
    raise ModelUnavailableError(
        f"{root}: no FFHQ UNet ({DIFFUSERS_DIR}/unet or CompVis's {COMPVIS_FILE}); see"
        " `faceanon models`"
    )


def _base_config(root: Path) -> dict[str, Any]:
    """The UNet config: the diffusers conversion's, else the FFHQ LDM's."""
    import json

    folder = _diffusers_dir(root, "unet") if root.is_dir() else None
    if folder is None:
        return _compvis_config()
    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def load_controlnet_module(path: Path, config: dict[str, Any], hint_factor: int) -> Any:
    """:class:`SignflipControlNet` with the authors' checkpoint loaded strictly."""
    from diffusers import UNet2DModel

    from faceanon.backbones.compvis import read_checkpoint
    from faceanon.backbones.controlnet import SignflipControlNet

    state = read_checkpoint(path)
    base = UNet2DModel(**config)
    net = SignflipControlNet(base, copy.deepcopy(base), hint_factor)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "shapes differ"
        raise ModelUnavailableError(
            f"{path}: not one of the authors' ControlNet checkpoints ({detail[:160]})"
        ) from None
    return net.eval()


def load(
    name: str,
    root: Path,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    vq_folder: Callable[[], Path] | None = None,
) -> Backbone:
    """Backbone ``name`` (a key of :data:`CONDITIONING`) from the files below ``root``;
    ``vq_folder()``: where the VQ autoencoder is when ``root`` has no ``vqvae/`` (the registry
    fetches CompVis's, which the authors' models share)."""
    from faceanon.backbones.closed_form import reference_schedule
    from faceanon.backbones.controlnet import ControlNetBackbone
    from faceanon.backbones.diffusers_backbone import DiffusersBackbone

    root = Path(root)
    if not root.exists():
        raise ModelUnavailableError(f"{root}: not found")
    conditioning = CONDITIONING[name]
    folder = root.parent if root.is_file() else root  # where the autoencoder may lie
    try:
        if conditioning is None:
            unet, vq = _unet(root), _vq(folder, vq_folder)
            return DiffusersBackbone(
                unet, vq, reference_schedule(), name=name, revision=revision, device=device
            )
        path = controlnet_file(root, conditioning)
        vq = _vq(folder, vq_folder)
        config = _base_config(root)
        hint_factor = 2 ** (len(vq.config.block_out_channels) - 1)  # image side / latent side
        net = load_controlnet_module(path, config, hint_factor)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"{root}: cannot load {name}: {first}") from None
    inner = DiffusersBackbone(
        net.trained_unet, vq, reference_schedule(), name=name, revision=revision, device=device
    )
    return ControlNetBackbone(inner, net, conditioning)
