"""The embedded models' faces shown denoised (faceanon.methods.display, issue 26): the photo
shows the model's clean estimate of the anonymized face, the file carries the exact face, and
the key restores from that."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import psnr
from PIL import Image, PngImagePlugin
from skimage import data

import faceanon
import faceanon.anonymizer
from faceanon.backbones.closed_form import GaussianBackbone
from faceanon.errors import MetadataError
from faceanon.faces.masks import EllipseMask
from faceanon.media.io import read_image
from faceanon.methods.display import Steady, denoised, level_step
from faceanon.secure.container import FaceRecord, Metadata

FAST = {"backbone": "face-prior", "steps": 10, "recall": "standard"}


def test_denoised_is_the_posterior_mean_inside_the_mask_only() -> None:
    """With an exact noise predictor (Gaussian data, mean 0.1, sigma 0.5) the estimate is the
    posterior mean of the face under noise of variance (1 - a) / a: mu + (z - mu) a s^2 /
    (a s^2 + 1 - a); outside the mask ``z`` itself."""
    backbone = GaussianBackbone(mu=0.1)
    z = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grids = torch.zeros((2, 1, 64, 64), dtype=torch.bool)
    grids[:, :, 10:40, 20:50] = True
    out = denoised(backbone, z, grids, 0.965)
    a = float(backbone.schedule.alphas_cumprod[level_step(backbone, 0.965)])
    assert abs(a - 0.965) < 0.002
    expected = 0.1 + (z - 0.1) * a * 0.25 / (a * 0.25 + 1 - a)
    inside = grids.expand_as(z)
    assert torch.allclose(out[inside], expected[inside], atol=1e-12)
    assert torch.equal(out[~inside], z[~inside])


def _speckle(image: np.ndarray, region: np.ndarray) -> float:
    """RMS of the Laplacian of R - G inside ``region`` (issue 26's colour speckle)."""
    f = image.astype(np.float64)
    return float(np.sqrt((cv2.Laplacian(f[..., 0] - f[..., 1], cv2.CV_64F)[region] ** 2).mean()))


def test_photos_show_denoised_faces_and_restore_from_the_exact_ones(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from faceanon.faces.finder import FaceFinder
    from faceanon.loading import backbone
    from faceanon.media import photos

    monkeypatch.setattr(faceanon.anonymizer, "new_nonce", lambda: bytes(16))
    photo = data.astronaut()
    key = faceanon.SecretKey(bytes(range(16)))
    anonymizer = faceanon.anonymizer.Anonymizer(backbone("face-prior", "cpu"), 10)
    faces = FaceFinder().find(photo)
    [outcome] = photos.anonymize([photo], [faces], "keyflip", anonymizer=anonymizer, key=key)
    assert outcome.exact_image is not None
    assert json.loads(outcome.metadata)["display"] == 0.965  # type: ignore[arg-type]
    changed = (outcome.image != photo).any(axis=-1)
    near = cv2.dilate(changed.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(outcome.exact_image[~near], photo[~near])  # both: only the face
    face = cv2.erode(changed.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    assert face.sum() > 5000
    # The photo shows far less colour speckle than the exact face has (measured 3.4 vs 10.6
    # here, T = 10).
    assert _speckle(outcome.image, face) < 0.6 * _speckle(outcome.exact_image, face)
    assert psnr(outcome.image, photo, face) < 16  # still another face

    # The same through the API and a PNG file.
    anon = faceanon.anonymize_photo(photo, key, faceanon.Settings(**FAST))  # type: ignore[arg-type]
    faceanon.save_photo(anon, tmp_path / "out.png")
    assert read_image(tmp_path / "out.png").latents  # the PNG carries the exact face
    restored = faceanon.restore_photo(tmp_path / "out.png", key)
    db = psnr(restored.image, photo, face)
    assert db > 19.5  # measured 20.5 (T = 10); the same faces not denoised, from their pixels: 20.3
    wrong = faceanon.restore_photo(tmp_path / "out.png", faceanon.SecretKey(bytes(16)))
    assert psnr(wrong.image, photo, face) < 16

    # Stripped of the data, the restore says so in one line and starts from the shown pixels.
    with Image.open(tmp_path / "out.png") as img:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("faceanon", img.text["faceanon"])
        img.save(tmp_path / "stripped.png", pnginfo=info)
    with pytest.warns(UserWarning, match="which a keyflip file whose faces are shown denoised"):
        stripped = faceanon.restore_photo(tmp_path / "stripped.png", key)
    assert psnr(stripped.image, photo, face) < db - 1

    # Paper mode shows the faces as they are: no display, nothing beside the PNG's pixels.
    paper = faceanon.Settings(**FAST, paper_mode=True)  # type: ignore[arg-type]
    plain = faceanon.anonymize_photo(photo, key, paper)
    assert "display" not in json.loads(plain.metadata)  # type: ignore[arg-type]
    faceanon.save_photo(plain, tmp_path / "paper.png")
    assert read_image(tmp_path / "paper.png").latents == ()


def test_the_file_records_the_display_and_refuses_a_bad_one() -> None:
    record = FaceRecord(bytes(16), mask=EllipseMask())
    meta = Metadata("keyflip", (record,), "face-prior", None, 50, colour=0.8, display=0.965)
    text = meta.to_json()
    assert json.loads(text)["faceanon"] == 6
    assert Metadata.from_json(text).display == 0.965
    for bad in (0.3, 1, 1.5, "0.9", True, float("nan"), [0.9]):
        changed = json.loads(text)
        changed["display"] = bad
        with pytest.raises(MetadataError, match="display"):
            Metadata.from_json(json.dumps(changed))


def test_only_the_embedded_models_show_denoised_faces(closed_form) -> None:  # type: ignore[no-untyped-def]
    assert faceanon.anonymizer.Anonymizer(closed_form).display is None
    with pytest.raises(ValueError, match="only the embedded models"):
        faceanon.anonymizer.Anonymizer(closed_form, display=0.9)


def test_steady_blends_each_track_with_its_last_shown_face() -> None:
    steady = Steady(0.5)
    a, b = np.full((4, 4, 3), 100, np.uint8), np.full((4, 4, 3), 200, np.uint8)
    first = steady([a, b, a], [b"one", b"two", None])
    assert [int(f[0, 0, 0]) for f in first] == [100, 200, 100]  # a new track: its own face
    second = steady([b, a, b], [b"one", b"two", None])
    assert [int(f[0, 0, 0]) for f in second] == [150, 150, 200]  # half its own; None: as is
    assert int(steady([b], [b"one"])[0][0, 0, 0]) == 175  # the blend goes on from what was shown
    steady.keep({b"two"})
    assert int(steady([b], [b"one"])[0][0, 0, 0]) == 200  # "one" ended: it starts again
    with pytest.raises(ValueError):
        Steady(0)


def test_a_tracks_second_frame_shows_half_of_each_and_restores_as_unsteadied(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two frames of one track (the same face, the light changed), steadied and not: the
    first frame is the same; the second shows, inside the face, the mean of the two faces as
    they are shown unsteadied; the exact faces, which the restore starts from, are the same."""
    from faceanon.faces.finder import FaceFinder
    from faceanon.loading import backbone
    from faceanon.media import photos

    monkeypatch.setattr(faceanon.anonymizer, "new_nonce", lambda: bytes(16))
    first = data.astronaut()
    second = np.clip(first * 0.8 + 30, 0, 255).astype(np.uint8)
    key = faceanon.SecretKey(bytes(range(16)))
    anonymizer = faceanon.anonymizer.Anonymizer(backbone("face-prior", "cpu"), 10)
    faces = FaceFinder().find(first)
    track = [[bytes(16)], [bytes(16)]]

    def run(steady: Steady | None) -> list[photos.Outcome]:
        frames, found = [first, second], [faces, faces]
        return photos.anonymize(
            frames, found, "keyflip", anonymizer=anonymizer, key=key, nonces=track, steady=steady
        )

    steady, plain = run(Steady()), run(None)
    assert np.array_equal(steady[0].image, plain[0].image)
    changed = (plain[0].image != first).any(axis=-1)
    inside = cv2.erode(changed.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert inside.sum() > 5000
    mean = (plain[0].image.astype(float) + plain[1].image) / 2
    # measured 0.31 (rounding), against 4.6 for the unsteadied second frame
    assert np.abs(steady[1].image[inside] - mean[inside]).mean() < 1.0
    assert np.abs(plain[1].image[inside].astype(float) - mean[inside]).mean() > 3
    for a, b in zip(steady, plain, strict=True):
        assert a.exact_image is not None and np.array_equal(a.exact_image, b.exact_image)


def test_a_video_shows_its_tracks_steadied(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The video pipeline steadies each track (the test above shows what that does)."""
    from pathlib import Path

    import faceanon.methods.display as display
    from faceanon.apps.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    calls: list[list[bytes | None]] = []

    class Spy(Steady):
        def __call__(self, shown, nonces):  # type: ignore[no-untyped-def]
            calls.append(list(nonces))
            return super().__call__(shown, nonces)

    monkeypatch.setattr(display, "Steady", Spy)
    monkeypatch.chdir(tmp_path)
    make_clip(Path("clip.mp4"), 3, (320, 180), audio=False)
    assert main(["keygen", "-o", "k.key"]) == 0
    fast = ["--backbone", "face-prior", "--steps", "5", "--recall", "standard", "--upright-only"]
    assert main(["anonymize", "clip.mp4", "-k", "k.key", *fast]) == 0
    assert calls and all(n is not None for c in calls for n in c) and len(calls[0]) >= 3
    calls.clear()
    assert main(["anonymize", "clip.mp4", "-k", "k.key", *fast, "--paper-mode", "-o", "p.mp4"]) == 0
    assert not calls  # paper mode shows the faces as they are


def test_hydro_shows_its_faces_denoised_and_toned_too(face) -> None:  # type: ignore[no-untyped-def]
    """hydro (irreversible) has nothing to restore: its faces are shown denoised and moved
    toward the kept skin, as keyflip's are."""
    from faceanon.loading import backbone

    prior = backbone("face-prior", "cpu")
    mask = EllipseMask()
    inside = mask.grid(256, 256).astype(bool)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    shown, plain = (
        faceanon.anonymizer.Anonymizer(prior, 10, colour=None, display=d).deidentify(
            [face], [mask], seed=3
        )[0]
        for d in ("default", None)
    )
    # measured 2.4-2.5 vs 7.2-7.6 (seeds 3-5, T = 10; the original crop: 6.8)
    assert _speckle(shown, inside) < 0.5 * _speckle(plain, inside)
    assert psnr(shown, face, inside) < 16  # another face
    # ...and moved toward the kept skin as keyflip's are: the face made without the tone
    # shift, moved by it, is the face made with it (measured 0.45 levels apart; 87 unmoved).
    from faceanon.anonymizer import to_tensor, to_uint8
    from faceanon.methods.colour import DEFAULT_ALPHA, shift

    [toned] = faceanon.anonymizer.Anonymizer(prior, 10).deidentify([face], [mask], seed=3)
    grid = torch.from_numpy(mask.grid(*prior.latent_shape[1:])[None, None])
    latent = prior.encode(to_tensor([shown], prior.image_size))
    [moved] = to_uint8(prior.decode(shift(latent, grid, DEFAULT_ALPHA)))
    assert np.abs(toned[inside].astype(int) - shown[inside]).mean() > 20
    assert np.abs(toned[inside].astype(int) - moved[inside]).mean() < 1
