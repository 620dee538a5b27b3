"""The BiSeNet face-parser mask (issue 14): a tiny ONNX model in the layout of yakhyo's exports
drives the real code path; occluders inside the face stay as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import psnr
from PIL import Image
from skimage import data

from faceanon.apps.cli import main
from faceanon.errors import MetadataError, ModelUnavailableError
from faceanon.faces.masks import KEEP_GRID, FaceMask, keep_from_bytes
from faceanon.faces.parser import CLASSES, FaceParser, model_file
from faceanon.secure.container import Metadata

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def tiny_parser(path) -> None:
    """A 1x1-conv 'BiSeNet' with the exports' interface (input ``input`` N x 3 x 512 x 512,
    three outputs of N x 19 x 512 x 512 logits): after ImageNet normalisation, red-dominant
    pixels are skin, green ones background, blue ones cloth (a stand-in for a hand)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((19, 3, 1, 1), np.float32)
    bias = np.full(19, -10.0, np.float32)
    for name, channel in (("skin", 0), ("background", 1), ("cloth", 2)):
        weight[CLASSES.index(name), channel] = 1.0
        bias[CLASSES.index(name)] = 0.0
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["output"]),
        helper.make_node("Identity", ["output"], ["out16"]),
        helper.make_node("Identity", ["output"], ["out32"]),
    ]
    shape = ["batch_size", 19, 512, 512]
    graph = helper.make_graph(
        nodes,
        "bisenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, 512, 512])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
            for n in ("output", "out16", "out32")
        ],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def parser_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("parser") / "tiny.onnx"
    tiny_parser(path)
    return path


def _crop_with_hand() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import cv2

    crop = np.zeros((256, 256, 3), np.uint8)
    crop[:] = GREEN
    face = np.zeros((256, 256), np.uint8)
    cv2.ellipse(face, (128, 150), (70, 90), 0, 0, 360, 1, -1)
    crop[face.astype(bool)] = RED
    hand = np.zeros((256, 256), bool)
    hand[170:230, 90:170] = True  # over the mouth and chin
    crop[hand] = BLUE
    return crop, face.astype(bool) & ~hand, hand


def test_parser_marks_the_face_classes_and_not_the_occluder(parser_file):
    crop, skin, hand = _crop_with_hand()
    mask = FaceParser(parser_file)(crop)
    assert mask.shape == (256, 256) and mask.dtype == bool
    assert (mask & skin).sum() / skin.sum() > 0.99
    # The authors' coarse mask marks every pixel a face pixel touches: a 1-2 px rim at most.
    assert (mask & ~skin).sum() < 0.02 * skin.sum()
    import cv2

    inner_hand = cv2.erode(hand.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not mask[inner_hand].any()
    labels = FaceParser(parser_file).labels(crop)
    assert labels.shape == (512, 512) and labels[0, 0] == CLASSES.index("background")


def test_parsed_mask_keeps_the_occluder_cells():
    _, skin, hand = _crop_with_hand()
    mask = FaceMask.from_parsing(skin)
    assert mask.keep.shape == (KEEP_GRID, KEEP_GRID)
    # The outline is public (the whole crop): the face is exactly the cells not kept.
    assert mask.outline.grid(64, 64).all()
    assert np.array_equal(mask.grid(64, 64), ~mask.keep)
    grid = mask.grid(64, 64)
    hand_cells = hand.reshape(64, 4, 64, 4).all(axis=(1, 3))
    assert not grid[hand_cells].any() and mask.keep[hand_cells].all()
    assert grid[skin.reshape(64, 4, 64, 4).all(axis=(1, 3))].all()
    # Coarser and finer grids agree with the 64 one; the bits round-trip.
    assert mask.grid(16, 16).sum() > 0 and mask.grid(256, 256).shape == (256, 256)
    assert np.array_equal(keep_from_bytes(mask.keep_bytes()), mask.keep)


def _save(path, image):
    Image.fromarray(image).save(path)


def _astronaut_with_hand() -> tuple[np.ndarray, np.ndarray]:
    photo = data.astronaut().copy()  # NASA, public domain
    hand = np.zeros(photo.shape[:2], bool)
    hand[128:158, 190:240] = True  # a blue bar across the astronaut's mouth
    photo[hand] = BLUE
    return photo, hand


def test_solid_with_the_parser_mask_leaves_the_occluder(tmp_path, monkeypatch, parser_file):
    import cv2

    monkeypatch.chdir(tmp_path)
    photo, hand = _astronaut_with_hand()
    _save("astro.png", photo)
    args = ["anonymize", "astro.png", "--method", "solid", "--mask", "parser"]
    assert main([*args, "--parser-model", str(parser_file)]) == 0
    out = np.asarray(Image.open("astro_anonymized.png").convert("RGB"))
    changed = (out != photo).any(axis=-1)
    inner = cv2.erode(hand.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert changed.sum() > 3000 and not changed[inner].any()
    # The landmark mask covers the bar.
    assert main(["anonymize", "astro.png", "--method", "solid", "-o", "lm.png"]) == 0
    landmark = np.asarray(Image.open("lm.png").convert("RGB"))
    assert (landmark != photo).any(axis=-1)[inner].mean() > 0.9


def _keyflip_with_parser(parser_file, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """astro.png (with the bar over the mouth) anonymized by keyflip with the parser mask into
    astro_anonymized.png under my.key, in the current folder; the photo and the bar."""
    photo, hand = _astronaut_with_hand()
    _save("astro.png", photo)
    assert main(["keygen", "-o", "my.key"]) == 0
    fast = ["--backbone", "closed-form", "--steps", str(steps), "--mask", "parser"]
    model = ["--parser-model", str(parser_file)]
    assert main(["anonymize", "astro.png", "-k", "my.key", *fast, *model]) == 0
    return photo, hand


def test_keyflip_with_the_parser_mask_round_trips(tmp_path, monkeypatch, parser_file):
    monkeypatch.chdir(tmp_path)
    photo, hand = _keyflip_with_parser(parser_file, steps=50)
    meta = Metadata.from_json(Image.open("astro_anonymized.png").text["faceanon"])
    assert meta.faces[0].keep is not None  # the kept cells travel in the clear
    anonymized = np.asarray(Image.open("astro_anonymized.png").convert("RGB"))
    # Restoring needs no parser: the mask comes from the file.
    assert main(["deanonymize", "astro_anonymized.png", "-k", "my.key"]) == 0
    restored = np.asarray(Image.open("astro_deanonymized.png").convert("RGB"))
    face = (anonymized != photo).any(axis=-1)
    assert face.sum() > 2000 and not face[hand].all()
    assert psnr(restored, photo, face) > psnr(anonymized, photo, face) + 8


def test_damaged_kept_cells_or_points_are_metadata_errors(tmp_path, monkeypatch, parser_file):
    monkeypatch.chdir(tmp_path)
    _keyflip_with_parser(parser_file, steps=5)
    text = Image.open("astro_anonymized.png").text["faceanon"]
    assert Metadata.from_json(text).faces[0].keep is not None
    for field, value in (
        ("keep", json.loads(text)["faces"][0]["keep"][:-8]),  # bits missing
        ("points", [[3, 4000]]),  # a hint point outside the crop
        ("points", [[1, 2]] * 69),  # more points than a face has landmarks
        ("points", [[1.5, 2]]),
    ):
        bad = json.loads(text)
        bad["faces"][0][field] = value
        with pytest.raises(MetadataError, match=r"damaged \((kept cells|hint)"):
            Metadata.from_json(json.dumps(bad))


def test_missing_parser_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ModelUnavailableError, match="no such face-parsing model"):
        model_file(str(tmp_path / "nope.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelUnavailableError, match="not a face-parsing ONNX model") as info:
        FaceParser(tmp_path / "bad.onnx")
    assert "\n" not in str(info.value)


def test_ellipse_mask_and_aligned_crops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = data.astronaut()
    _save("astro.png", photo)
    assert main(["anonymize", "astro.png", "--method", "solid", "--mask", "ellipse"]) == 0
    out = np.asarray(Image.open("astro_anonymized.png").convert("RGB"))
    changed = (out != photo).any(axis=-1)
    assert main(["anonymize", "astro.png", "--method", "solid", "-o", "lm.png"]) == 0
    landmark = (np.asarray(Image.open("lm.png").convert("RGB")) != photo).any(axis=-1)
    assert changed.sum() > 2000 and (changed != landmark).sum() > 500  # another region
    # --mask means nothing for aligned crops: said, not ignored.
    crop = np.asarray(Image.fromarray(photo[20:276, 120:376]))
    _save("crop.png", crop)
    assert (
        main(["anonymize", "crop.png", "--aligned", "--method", "solid", "--mask", "parser"]) == 2
    )
