"""The paper authors' models on tiny stand-ins in the real layouts: CompVis checkpoints, the
authors' ControlNet state dicts, their hints (issue 14)."""

from __future__ import annotations

import copy
import pickle
import sys
import types

import compvis_reference as ref
import numpy as np
import pytest
import torch

from faceanon.backbones import compvis, paper
from faceanon.backbones.builtin import _TINY_UNET, _TINY_VQ
from faceanon.backbones.controlnet import SignflipControlNet
from faceanon.backbones.registry import MODELS, load_backbone
from faceanon.errors import ModelUnavailableError
from faceanon.faces.hints import HintMaker, draw_points, hint_points

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
T = torch.tensor([7, 640])


def _tiny_vq(folder, seed=5):
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(**_TINY_VQ)
    vq.save_pretrained(folder / "ffhq-diffusers" / "vqvae")
    return vq


def test_compvis_keys_convert_to_a_unet_that_computes_the_compvis_network():
    from diffusers import UNet2DModel

    weights = ref.make_weights(seed=0)
    unet = UNet2DModel(**ref.CONFIG)
    unet.load_state_dict(compvis.convert_unet(weights, ref.CONFIG), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(unet(X, T).sample, ref.forward(weights, X, T))


def test_conversion_names_a_missing_and_a_left_over_key():
    weights = ref.make_weights(seed=0)
    missing = {k: v for k, v in weights.items() if k != "output_blocks.2.2.conv.weight"}
    with pytest.raises(KeyError, match=r"output_blocks\.2\.2\.conv\.weight"):
        compvis.convert_unet(missing, ref.CONFIG)
    extra = {**weights, "input_blocks.99.0.in_layers.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected key input_blocks\.99"):
        compvis.convert_unet(extra, ref.CONFIG)


class _Callback:
    """Stands for a Lightning callback pickled into a checkpoint: unpickling it would run this."""

    ran = False

    def __setstate__(self, state):
        _Callback.ran = True


def _lightning_checkpoint(path, weights):
    """A checkpoint as PyTorch Lightning writes it: weights under ``state_dict`` with the
    LatentDiffusion prefixes, and pickled objects of a library the reader does not have."""
    module = types.ModuleType("fake_lightning_callbacks")
    _Callback.__module__ = module.__name__
    module._Callback = _Callback
    sys.modules[module.__name__] = module
    state = {compvis.UNET_PREFIX + k: v for k, v in weights.items()}
    state["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2, 3, 3, 3)
    try:
        torch.save(
            {"state_dict": state, "callbacks": {"ModelCheckpoint": _Callback()}, "epoch": 9}, path
        )
    finally:
        del sys.modules[module.__name__]


def test_lightning_checkpoint_loads_weights_only_without_running_its_objects(tmp_path):
    weights = ref.make_weights(seed=2)
    _lightning_checkpoint(tmp_path / "model.ckpt", weights)
    with pytest.raises(pickle.UnpicklingError):  # what plain weights-only loading says
        torch.load(tmp_path / "model.ckpt", weights_only=True)
    data = compvis.read_checkpoint(tmp_path / "model.ckpt")
    assert isinstance(data["callbacks"]["ModelCheckpoint"], compvis._Inert)
    assert not _Callback.ran
    unet = compvis.unet_state_dict(data, tmp_path / "model.ckpt")
    assert set(unet) == set(weights)


def test_ldm_ffhq_backbone_from_a_compvis_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "UNET_CONFIG", ref.CONFIG)
    weights = ref.make_weights(seed=3)
    _lightning_checkpoint(tmp_path / "model.ckpt", weights)
    vq = _tiny_vq(tmp_path)
    backbone = load_backbone("ldm-ffhq-256", model_dir=tmp_path)
    assert backbone.name == "ldm-ffhq-256" and backbone.revision is None
    assert backbone.latent_shape == (3, 16, 16) and backbone.image_size == 64
    torch.testing.assert_close(backbone.eps(X, 640), ref.forward(weights, X, T[1:].expand(2)))
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(backbone.encode(image), vq.encode(image).latents)
    # The schedule is the FFHQ config's (scaled-linear 0.0015 -> 0.0195, 1000 steps).
    assert backbone.schedule.levels(50).timesteps[-1] == 980
    # The same file given directly.
    again = load_backbone("ldm-ffhq-256", model_dir=tmp_path / "model.ckpt")
    torch.testing.assert_close(again.eps(X, 7), backbone.eps(X, 7))
    # Without a vqvae/ beside it, CompVis's (which the authors' models share) is fetched.
    from faceanon.backbones import registry

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.ckpt").write_bytes((tmp_path / "model.ckpt").read_bytes())
    asked = []

    def fetch(entry, cache_dir, files=None):  # type: ignore[no-untyped-def]
        asked.append((entry.name, files))
        return tmp_path / "ffhq-diffusers"  # a snapshot holding vqvae/

    monkeypatch.setattr(registry, "fetch", fetch)
    fetched = load_backbone("ldm-ffhq-256", model_dir=alone)
    assert asked == [("ldm-celebahq-256", ("vqvae/*",))]
    torch.testing.assert_close(fetched.encode(image), backbone.encode(image))


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint", "no unet"])
def test_damaged_compvis_checkpoints_are_one_line_errors(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(paper, "UNET_CONFIG", ref.CONFIG)
    path = tmp_path / "model.ckpt"
    _lightning_checkpoint(path, ref.make_weights(seed=0))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "not a checkpoint":
        path.write_text("hello")
    else:
        torch.save({"state_dict": {"first_stage_model.x": torch.zeros(1)}}, path)
    _tiny_vq(tmp_path)
    with pytest.raises(ModelUnavailableError) as info:
        load_backbone("ldm-ffhq-256", model_dir=tmp_path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


# --- the authors' ControlNet ------------------------------------------------------------


def _controlnet(seed=0, control="random"):
    """A tiny SignflipControlNet: ``random`` control weights, the authors' ``init`` (copy of the
    base + zero convs), or ``zero`` (every control weight 0)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    base = UNet2DModel(**_TINY_UNET)
    net = SignflipControlNet(base, copy.deepcopy(base), hint_factor=4)
    control_params = [
        p for n, p in net.named_parameters() if not n.startswith(("trained_", "time_"))
    ]
    with torch.no_grad():
        for p in control_params:
            if control == "zero":
                p.zero_()
            elif control == "random":
                p.normal_(0, 0.05)
    return net.eval()


def test_state_dict_has_the_authors_key_names():
    # The names their anonymization/controlnet.py gives its modules (strict loading needs all).
    keys = set(_controlnet().state_dict())
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {
        "trained_unet",
        "control_copy_unet",
        "time_embedding",  # the base UNet's time embedding, registered a second time
        "control_copy_unet_hint_block",
        "control_copy_unet_down_zero_convs",
        "control_copy_unet_mid_zero_conv",
    }
    # Hint block: conv + SiLU, two stride-2 stages (256 -> 64: factor 4), conv + SiLU + zero conv.
    for k in ("0.0", "1.0", "1.2", "2.0", "2.2", "3.0", "3.2"):
        assert f"control_copy_unet_hint_block.{k}.weight" in keys
    assert "control_copy_unet_hint_block.4.0.weight" not in keys
    # One zero conv per resnet of the down blocks (2 levels x 1 resnet), none for downsamplers.
    zero_convs = {k.split(".")[1] for k in keys if k.startswith("control_copy_unet_down_zero")}
    assert zero_convs == {"0", "1"}
    assert "control_copy_unet.up_blocks.0.resnets.0.conv1.weight" in keys  # the whole copy
    assert "time_embedding.linear_1.weight" in keys


def _residual_hooks(net, hint, x, emb):
    """An independent recomputation: the base UNet's own diffusers forward, with the control
    residuals added to the skips its up blocks receive and to its mid block's output."""
    skips, mid = net.controls(x, emb, hint)
    base = net.trained_unet
    handles = [base.mid_block.register_forward_hook(lambda m, i, out: out + mid)]
    for block in base.up_blocks:
        n = len(block.resnets)
        mine, skips = skips[-n:], skips[:-n]

        def add(module, args, kwargs, mine=mine):
            hidden, res, *rest = args
            return (hidden, tuple(r + c for r, c in zip(res, mine, strict=True)), *rest), kwargs

        handles.append(block.register_forward_pre_hook(add, with_kwargs=True))
    return handles


def _emb(net, t, batch):
    return net.time_embedding(net.time_proj(t.expand(batch)))


@pytest.mark.parametrize("control", ["random", "init"])
def test_controlnet_forward_matches_an_independent_recomputation(control):
    net = _controlnet(seed=1, control=control)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    hint = (torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    t = torch.tensor(500)
    with torch.no_grad():
        mine = net(x, t, hint)
        base_only = net.trained_unet(x, t).sample
        handles = _residual_hooks(net, hint, x, _emb(net, t, 2))
        try:
            expected = net.trained_unet(x, t).sample
        finally:
            for h in handles:
                h.remove()
    torch.testing.assert_close(mine, expected)
    # Even the authors' zero-initialised ControlNet changes eps: the copy's first skip and its
    # downsamplers' outputs reach the base UNet without a zero conv.
    assert (mine - base_only).abs().max() > 1e-3


def test_zero_control_weights_give_the_base_unet_exactly():
    net = _controlnet(seed=4, control="zero")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    hint = torch.ones(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor(250), hint), net.trained_unet(x, 250).sample)


def _controlnet_folder(root, conditioning="segmentation_masks", seed=0):
    """The authors' weights layout: weights/models/ffhq-diffusers/{unet,vqvae} and
    weights/ffhq_controlnet/<conditioning>/controlnet_epoch_15.pth (a plain state dict)."""
    net = _controlnet(seed=seed)
    models = root / "weights" / "models"
    net.trained_unet.save_pretrained(models / "ffhq-diffusers" / "unet")
    _tiny_vq(models)
    target = root / "weights" / "ffhq_controlnet" / conditioning / paper.CONTROLNET_FILE
    target.parent.mkdir(parents=True)
    torch.save(net.state_dict(), target)
    return net


def test_controlnet_backbone_loads_the_authors_layout_and_uses_the_hint(tmp_path):
    net = _controlnet_folder(tmp_path)
    backbone = load_backbone("ffhq-controlnet-mask", model_dir=tmp_path)
    z = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    hint = torch.zeros(2, 3, 256, 256)
    hint[:, :, 64:192, 64:192] = 1
    with torch.no_grad():
        expected = net(z, torch.tensor(300), hint)
    torch.testing.assert_close(backbone.eps(z, 300, hint=hint), expected)
    assert (backbone.eps(z, 300, hint=1 - hint) - expected).abs().max() > 1e-3
    torch.testing.assert_close(backbone.eps(z, 300), net.trained_unet(z, 300).sample)
    # The landmark ControlNets are not in this folder: one line naming what is missing.
    with pytest.raises(ModelUnavailableError, match=r"landmarks_5/controlnet_epoch_15\.pth"):
        load_backbone("ffhq-controlnet-landmarks5", model_dir=tmp_path)


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    _controlnet_folder(tmp_path)
    path = tmp_path / "weights" / "ffhq_controlnet" / "segmentation_masks" / paper.CONTROLNET_FILE
    state = torch.load(path, weights_only=True)
    del state["control_copy_unet_mid_zero_conv.weight"]
    torch.save(state, path)
    with pytest.raises(ModelUnavailableError, match="not one of the authors' ControlNet") as info:
        load_backbone("ffhq-controlnet-mask", model_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_paper_models_are_registered_with_their_sources():
    for name in paper.CONDITIONING:
        entry = MODELS[name]
        assert entry.hub_id == paper.HUB_ID and entry.files and entry.licence


# --- hints ----------------------------------------------------------------------------------


def test_landmark_hints_are_the_authors_squares():
    points68 = np.stack([np.arange(68) * 3.0 + 10, np.full(68, 100.0)], axis=1)
    five = hint_points(points68, "landmarks_5")
    assert five.shape == (5, 2) and five[0, 0] == 30 * 3 + 10  # the nose tip first
    assert hint_points(points68, "landmarks_26").shape == (26, 2)
    canvas = draw_points(np.array([[10.7, 20.2], [0.0, 0.0], [255.9, 255.9], [np.nan, 1]]), 256)
    assert canvas[19:22, 9:12].all() and canvas.sum() == 9 + 4 + 4  # clipped at the corners
    assert canvas[22, 10] == 0 and canvas[20, 12] == 0


def test_mask_hint_is_the_mask_the_method_uses():
    from faceanon.faces.masks import EllipseMask, LandmarkMask

    polygon = np.array([[60.0, 60], [200, 60], [200, 220], [60, 220]])
    mask = LandmarkMask(polygon, 256)
    maker = HintMaker("segmentation_masks", 256)
    crops = [np.zeros((256, 256, 3), np.uint8)] * 2
    hint = maker(crops, [mask, EllipseMask()])
    assert hint.shape == (2, 3, 256, 256) and set(np.unique(hint)) == {0.0, 1.0}
    assert np.array_equal(hint[0, 1], mask.crop_mask().astype(np.float32))
    assert np.array_equal(hint[1, 0], EllipseMask().grid(256, 256).astype(np.float32))


# --- through the whole photo pipeline -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "conditioning"),
    [("ffhq-controlnet-mask", "segmentation_masks"), ("ffhq-controlnet-landmarks5", "landmarks_5")],
)
def test_photo_round_trip_sees_the_same_hint_both_ways(tmp_path, monkeypatch, name, conditioning):
    from PIL import Image
    from skimage import data

    from faceanon.apps.cli import main
    from faceanon.backbones.controlnet import ControlNetBackbone
    from faceanon.diffusion.ddim_settings import network_calls
    from faceanon.secure.container import Metadata

    _controlnet_folder(tmp_path / "models", conditioning)
    seen: list[torch.Tensor] = []
    original_eps = ControlNetBackbone.eps

    def eps(self, latents, timestep, hint=None):
        seen.append(hint)
        return original_eps(self, latents, timestep, hint)

    monkeypatch.setattr(ControlNetBackbone, "eps", eps)
    monkeypatch.chdir(tmp_path)
    photo = data.astronaut()
    Image.fromarray(photo).save("astro.png")
    model = ["--model-dir", str(tmp_path / "models")]
    assert main(["keygen", "-o", "my.key"]) == 0
    assert (
        main(["anonymize", "astro.png", "-k", "my.key", "--backbone", name, *model, "--steps", "3"])
        == 0
    )
    assert main(["deanonymize", "astro_anonymized.png", "-k", "my.key", *model]) == 0
    # Every network call of both directions (3 steps, fixed-point:2 inversion: 10 each) went
    # through the ControlNet with the same hint.
    assert len(seen) == 2 * network_calls(3, 2)
    assert all(h is not None and torch.equal(h, seen[0]) for h in seen)
    hint = seen[0][0, 0]
    assert torch.equal(seen[0][0, 1], hint)
    meta = Metadata.from_json(Image.open("astro_anonymized.png").text["faceanon"])
    if conditioning == "segmentation_masks":  # the face mask at 256 px
        assert 0.15 < hint.mean() < 0.6 and meta.faces[0].points is None
    else:  # five 3 x 3 squares at the points stored in the clear
        points = meta.faces[0].points
        assert points is not None and len(points) == 5
        x, y = points[0]  # the nose tip, near the crop centre
        assert 100 < x < 156 and 110 < y < 170 and hint[y, x] == 1
        assert 9 * 4 <= hint.sum() <= 9 * 5
    anonymized = np.asarray(Image.open("astro_anonymized.png").convert("RGB"))
    changed = (anonymized != photo).any(axis=-1)
    assert changed.sum() > 2000  # the face was replaced
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() < 200 and xs.max() - xs.min() < 200  # and only the face
