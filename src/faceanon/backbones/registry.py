"""Named backbones: where their weights come from, which revision, under which licence.

Hub models are downloaded on first use into the Hugging Face cache (``HF_HOME``), only the
files the backbone needs, at a pinned revision; ``model_dir`` loads a local copy instead.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from faceanon.backbones import paper
from faceanon.errors import ModelUnavailableError

if TYPE_CHECKING:
    import torch

    from faceanon.backbones.base import Backbone


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    licence: str
    hub_id: str | None = None
    revision: str | None = None
    files: tuple[str, ...] | None = None  # what to download (patterns); None: a diffusers model


# The embedded model: works offline, anywhere, in seconds on a CPU (README "Models" says why it
# is the default); the photo-real ldm-celebahq-256 is one flag away.
DEFAULT_BACKBONE = "face-prior"

MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "face-prior",
            "embedded face model, exact noise predictor of a Gaussian mixture fitted on aligned"
            " face crops (64 px faces, blurry but face-like): offline, CPU (a one-face photo in"
            " ~7 s on 2 cores, start to finish), small"
            " faces, tests",
            "derived from UTKFace and CelebA: non-commercial research use only"
            " (faceanon/data/README.txt)",
        ),
        ModelEntry(
            "face-net",
            "embedded face model with a learned noise predictor (a residual MLP over the low"
            " frequencies of aligned face crops, exact Gaussian detail above them): offline,"
            " CPU, 64-px faces",
            "derived from UTKFace and CelebA: non-commercial research use only"
            " (faceanon/data/README.txt)",
        ),
        ModelEntry(
            "ldm-celebahq-256",
            "CompVis latent diffusion on CelebA-HQ 256 (UNet 274 M + VQ-f4), the paper's model",
            "Apache-2.0 (model card); trained on CelebA-HQ, non-commercial research data",
            hub_id="CompVis/ldm-celebahq-256",
            # The head of the main branch ("upload new weights", 2022-07-28), not a commit of a
            # community pull request: refs/pr/5 (f02a066, earlier pinned here) only adds
            # vqvae "scaling_factor": 1.0, which faceanon never reads (VQ latents are used
            # unscaled). Weights are .bin, loaded by diffusers with torch.load(weights_only).
            revision="03978f22272a3c2502da709c3940e227c9714bdd",
        ),
        ModelEntry(
            "ddpm-celebahq-256",
            "Google pixel-space DDPM (EMA) on CelebA-HQ 256; slower, no autoencoder error",
            "Apache-2.0 (model card); trained on CelebA-HQ, non-commercial research data",
            hub_id="google/ddpm-ema-celebahq-256",
            revision=None,  # not pinned yet: resolve and pin once verified online
        ),
        ModelEntry(
            "ldm-ffhq-256",
            "CompVis latent diffusion on FFHQ 256 (same architecture and VQ-f4 as"
            " ldm-celebahq-256), the authors' base model: their diffusers conversion"
            " (ffhq-diffusers/) or CompVis's model.ckpt via --model-dir",
            "UNet: CompVis latent-diffusion (MIT code, ommer-lab.com/files/latent-diffusion/"
            "ffhq.zip), conversion MIT (model card); trained on FFHQ (CC BY-NC-SA 4.0 images)",
            hub_id=paper.HUB_ID,
            files=paper.HUB_FILES["ldm-ffhq-256"],
        ),
        ModelEntry(
            "ffhq-controlnet-mask",
            "the authors' ControlNet on ldm-ffhq-256 conditioned on the face mask (the mask"
            " the method uses, sealed with the output): controlnet_epoch_15.pth for"
            " segmentation_masks",
            "MIT (model card); trained on FFHQ (CC BY-NC-SA 4.0 images)",
            hub_id=paper.HUB_ID,
            files=paper.HUB_FILES["ffhq-controlnet-mask"],
        ),
        ModelEntry(
            "ffhq-controlnet-landmarks5",
            "the authors' ControlNet conditioned on 5 landmarks (3x3 squares; dlib's points on"
            " the face, stored with the output): landmarks_5/controlnet_epoch_15.pth via"
            " --model-dir",
            "MIT (the authors' repository); trained on FFHQ (CC BY-NC-SA 4.0 images)",
            hub_id=paper.HUB_ID,
            files=paper.HUB_FILES["ffhq-controlnet-landmarks5"],
        ),
        ModelEntry(
            "ffhq-controlnet-landmarks26",
            "the authors' ControlNet conditioned on 26 landmarks (jaw, eyes, nose, mouth):"
            " landmarks_26/controlnet_epoch_15.pth via --model-dir",
            "MIT (the authors' repository); trained on FFHQ (CC BY-NC-SA 4.0 images)",
            hub_id=paper.HUB_ID,
            files=paper.HUB_FILES["ffhq-controlnet-landmarks26"],
        ),
        ModelEntry(
            "tiny",
            "tiny random-weight LDM built locally: smoke runs and tests, faces are NOT realistic",
            "n/a (built locally)",
        ),
        ModelEntry(
            "closed-form",
            "exact noise predictor for Gaussian data: tests of the engine, images are noise",
            "n/a (built locally)",
        ),
        ModelEntry(
            "reference-random",
            "reference-size architecture (274 M UNet + 55 M VQ) with random weights: benchmarks",
            "n/a (built locally)",
        ),
    )
}

# Only what the backbone loads: the old checkpoints (*.pt, *.ckpt) in these repos are skipped.
_ALLOW = [
    "model_index.json",
    "config.json",
    "scheduler_config.json",
    "*/config.json",
    "*/scheduler_config.json",
    "diffusion_pytorch_model.*",
    "*/diffusion_pytorch_model.*",
]


def _download_hint(entry: ModelEntry, files: tuple[str, ...] | None = None) -> str:
    rev = f" --revision {entry.revision}" if entry.revision else ""
    rev += "".join(f" --include '{f}'" for f in files or entry.files or ())
    return (
        f"download it where there is internet with `hf download {entry.hub_id}{rev}"
        " --local-dir DIR` and pass --model-dir DIR, or use the embedded --backbone face-prior"
        " (offline; blurry faces)"
    )


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Fail fast offline instead of sitting through the hub client's retries."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _patterns(entry: ModelEntry, files: tuple[str, ...] | None) -> list[str]:
    return list(files or entry.files or _ALLOW)


def hub_cache() -> str:
    """Where hub models are downloaded to (``HF_HUB_CACHE``, under ``HF_HOME``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_snapshot(
    entry: ModelEntry, cache_dir: Path | None = None, files: tuple[str, ...] | None = None
) -> Path | None:
    """The local snapshot folder of a hub model if it is already cached, else None."""
    if entry.hub_id is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            entry.hub_id,
            revision=entry.revision,
            allow_patterns=_patterns(entry, files),
            cache_dir=cache_dir,
            local_files_only=True,
        )
    except Exception:  # any hub error here just means "not cached"
        return None
    return Path(path)


def fetch(
    entry: ModelEntry, cache_dir: Path | None = None, files: tuple[str, ...] | None = None
) -> Path:
    """Download (or find in the cache) the files of a hub model (``files``: patterns, default
    the entry's); one clear line if offline."""
    if entry.hub_id is None:
        raise ValueError(f"{entry.name} is built locally, not downloaded")
    cached = cached_snapshot(entry, cache_dir, files)
    if cached is not None:
        return cached
    from huggingface_hub import snapshot_download

    if not _hub_reachable():
        raise ModelUnavailableError(
            f"backbone {entry.name}: {entry.hub_id} is not cached and the hub cannot be reached"
            " (offline?); " + _download_hint(entry, files)
        )
    try:
        return Path(
            snapshot_download(
                entry.hub_id,
                revision=entry.revision,
                allow_patterns=_patterns(entry, files),
                cache_dir=cache_dir,
            )
        )
    except Exception as exc:  # network, auth, or missing revision: all end the same way
        reason = type(exc).__name__
        raise ModelUnavailableError(
            f"backbone {entry.name}: cannot get {entry.hub_id} ({reason}, offline?); "
            + _download_hint(entry, files)
        ) from None


def _hub_entry(name: str) -> ModelEntry:
    """Any hub model given as ``owner/repo`` or ``owner/repo@revision``."""
    repo, _, revision = name.partition("@")
    if repo.count("/") != 1:
        raise ModelUnavailableError(
            f"unknown backbone {name!r}; known: {', '.join(MODELS)}, a hub id owner/repo[@rev],"
            " or --model-dir DIR"
        )
    return ModelEntry(name, "hub model", "see its model card", repo, revision or None)


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    model_dir: Path | None = None,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
) -> Backbone:
    """Load a backbone by registered name, hub id (``owner/repo[@revision]``, downloaded and
    cached like the registered ones), or from a local diffusers folder (``model_dir``)."""
    from faceanon.backbones.diffusers_backbone import load_folder

    if model_dir is not None and Path(model_dir).suffix == ".safetensors":
        from faceanon.backbones.face_net import load_face_net

        return load_face_net(Path(model_dir), device=device)  # a file of `faceanon fit-net`
    if model_dir is not None and Path(model_dir).suffix == ".npz":
        from faceanon.backbones.face_prior import load_face_prior

        return load_face_prior(Path(model_dir), device=device)  # a file of `faceanon fit-prior`
    if name in paper.CONDITIONING:
        root = Path(model_dir) if model_dir is not None else fetch(MODELS[name], cache_dir)
        revision = None if model_dir is not None else MODELS[name].revision
        vq = MODELS["ldm-celebahq-256"]
        return paper.load(
            name,
            root,
            revision=revision,
            device=device,
            vq_folder=lambda: fetch(vq, cache_dir, files=("vqvae/*",)) / "vqvae",
        )
    if model_dir is not None:
        # A local copy: its revision is unknown, so none is claimed.
        return load_folder(Path(model_dir), name=name, device=device)
    entry = MODELS.get(name) or _hub_entry(name)
    if name == "face-prior":
        from faceanon.backbones.face_prior import load_face_prior

        return load_face_prior(device=device)
    if name == "face-net":
        from faceanon.backbones.face_net import load_face_net

        return load_face_net(device=device)
    if name == "closed-form":
        from faceanon.backbones.closed_form import GaussianBackbone

        return GaussianBackbone()
    if name in ("tiny", "reference-random"):
        from faceanon.backbones.builtin import build_backbone

        return build_backbone("tiny" if name == "tiny" else "reference", device=device)
    return load_folder(fetch(entry, cache_dir), name=name, revision=entry.revision, device=device)
