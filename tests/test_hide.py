"""--method hide (faceanon.methods.hide, issue 29): identity guidance toward the original for the
guided recognizer, keyflip's restore from the exact data the file carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import psnr
from PIL import Image, PngImagePlugin
from skimage import data

import faceanon
from faceanon.anonymizer import Anonymizer, to_tensor
from faceanon.errors import FaceanonError
from faceanon.faces.masks import EllipseMask
from faceanon.faces.torch_recognizers import crop_recognizer, five_points
from faceanon.loading import backbone
from faceanon.media.io import read_image
from faceanon.secure.keys import SecretKey

FAST = {"backbone": "closed-form", "recall": "standard"}


def _cosines(name: str, original: np.ndarray, *others: np.ndarray) -> list[float]:
    """Cosines to the original, every crop aligned by the original's five points (as the
    guidance aligns them)."""
    points = five_points([original]).expand(len(others) + 1, -1, -1)
    with torch.no_grad():
        e = crop_recognizer(name)(to_tensor([original, *others], 256), points)
    return [float(e[0] @ e[i]) for i in range(1, len(e))]


def test_guidance_keeps_the_guided_recognizer_matching_and_the_plain_face_is_keyflips(face):
    anonymizer = Anonymizer(backbone("face-prior", "cpu", None), 10, inversion="fixed-point:1")
    key, nonces, masks = SecretKey(bytes(16)), [b"n" * 16], [EllipseMask()]
    plain, guided = anonymizer.hide([face], key, masks, nonces)
    # The unguided face is exactly what keyflip publishes with this key and nonce, without
    # the tone shift (which hide leaves out)...
    assert anonymizer.colour is not None
    untoned = Anonymizer(anonymizer.backbone, 10, inversion="fixed-point:1", colour=None)
    assert np.array_equal(plain[0], untoned.apply([face], key, masks, nonces)[0])
    # ...and the guided one is close to it for people but the original person for SFace.
    plain_cos, guided_cos = _cosines("sface", face, plain[0], guided[0])
    assert guided_cos > plain_cos + 0.25
    assert psnr(guided[0], plain[0]) > 20
    _, none = anonymizer.hide([face], key, masks, nonces, scale=0.0)
    assert np.array_equal(none[0], plain[0])  # scale 0: no guidance at all


def test_photo_round_trip_restores_from_the_carried_data(tmp_path, monkeypatch) -> None:
    # Fixed nonces: with random ones the stripped file's restore once came within 0.47 dB of
    # the carried data's in CI (the guided pixels are close to the plain face's).
    monkeypatch.setattr(faceanon.anonymizer, "new_nonce", lambda: bytes(16))
    photo = data.astronaut()
    key = faceanon.SecretKey(bytes(range(16)))
    settings = faceanon.Settings(method="hide", **FAST)  # type: ignore[arg-type]
    anon = faceanon.anonymize_photo(photo, key, settings)
    keyflip = faceanon.anonymize_photo(photo, key, faceanon.Settings(**FAST))  # type: ignore[arg-type]
    box = tuple(round(v) for v in anon.boxes[0])  # type: ignore[union-attr]
    face = (slice(box[1], box[3]), slice(box[0], box[2]))
    assert psnr(anon.image[face], photo[face]) < 12  # the face was replaced

    for name in ("out.png", "out.jpg"):
        faceanon.save_photo(anon, tmp_path / name)
        restored = faceanon.restore_photo(tmp_path / name, key)
        assert psnr(restored.image[face], photo[face]) > 20, name  # closed-form: keyflip's 22
    faceanon.save_photo(keyflip, tmp_path / "k.png")
    keyflip_back = faceanon.restore_photo(tmp_path / "k.png", key)
    hide_back = faceanon.restore_photo(tmp_path / "out.png", key)
    hide_db = psnr(hide_back.image[face], photo[face])
    assert hide_db > psnr(keyflip_back.image[face], photo[face]) - 0.5

    wrong = faceanon.restore_photo(tmp_path / "out.png", faceanon.SecretKey(bytes(16)))
    assert psnr(wrong.image[face], photo[face]) < 15

    # Without the data the restore says so in one line and starts from the guided pixels.
    with Image.open(tmp_path / "out.png") as img:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("faceanon", img.text["faceanon"])
        img.save(tmp_path / "stripped.png", pnginfo=info)
    assert read_image(tmp_path / "stripped.png").latents == ()
    with pytest.warns(UserWarning, match="no exact face data, which a --method hide file needs"):
        stripped = faceanon.restore_photo(tmp_path / "stripped.png", key)
    assert psnr(stripped.image[face], photo[face]) < hide_db - 0.3  # measured 21.39 vs 22.01


def test_damaged_data_is_one_line_and_bad_settings_are_refused(tmp_path) -> None:
    photo = data.astronaut()
    key = faceanon.SecretKey(bytes(range(16)))
    anon = faceanon.anonymize_photo(
        photo,
        key,
        faceanon.Settings(method="hide", **FAST),  # type: ignore[arg-type]
    )
    faceanon.save_photo(anon, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as img:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("faceanon", img.text["faceanon"])
        info.add_itxt("faceanon-latents", "not base64 at all!")
        img.save(tmp_path / "damaged.png", pnginfo=info)
    with pytest.warns(UserWarning, match=r"damaged\.png: exact face data is damaged"):
        faceanon.restore_photo(tmp_path / "damaged.png", key)

    with pytest.raises(FaceanonError, match="guide must be one of"):
        faceanon.Settings(method="hide", guide="dlib")
    with pytest.raises(FaceanonError, match="guide scale must be from 0 to 1000"):
        faceanon.Settings(method="hide", guide_scale=float("nan"))
    with pytest.raises(FaceanonError, match="method hide needs a key"):
        faceanon.anonymize_photo(photo, None, faceanon.Settings(method="hide", **FAST))  # type: ignore[arg-type]


def test_the_evaluation_publishes_the_guided_face_and_restores_from_the_unguided(closed_form):
    from faceanon.eval.methods import HideMethod, KeyflipMethod
    from faceanon.loading import face_finder

    photo = data.astronaut()
    faces = face_finder(recall="standard").find(photo)
    anonymizer, key = Anonymizer(closed_form), SecretKey(bytes(16))
    hidden = HideMethod(anonymizer, key, seed=0, scale=20.0).run(photo, faces, "a")
    keyflip = KeyflipMethod(anonymizer, key, seed=0).run(photo, faces, "a")
    assert list(hidden) == [
        "hide 20: anonymized",
        "hide 20: de-anonymized",
        "hide 20: wrong key (1 bit)",
        "hide 20: random key",
    ]
    # The restores start from the unguided faces: keyflip's, with the same key and nonces.
    for condition in ("de-anonymized", "random key"):
        assert np.array_equal(hidden[f"hide 20: {condition}"], keyflip[f"keyflip: {condition}"])
    assert not np.array_equal(hidden["hide 20: anonymized"], keyflip["keyflip: anonymized"])
