"""The library's front door (faceanon.api, issue 30): the command's path, typed settings."""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
import pytest
from PIL import Image
from skimage import data

import faceanon
from faceanon.apps.cli import main
from faceanon.errors import FaceanonError
from faceanon.media.io import read_image

FAST = {"backbone": "closed-form", "recall": "standard"}  # 15 steps, fixed-point:2


def _fixed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    count = iter(range(10**6))
    monkeypatch.setattr(
        secrets, "token_bytes", lambda n=32: hashlib.shake_256(b"%d" % next(count)).digest(n)
    )


def test_anonymize_photo_is_what_the_command_writes(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.astronaut()).save("a.png")
    key = faceanon.SecretKey(bytes(range(16)))
    (tmp_path / "k.key").write_text(key.to_text() + "\n")
    _fixed(monkeypatch)
    argv = ["anonymize", "a.png", "-k", "k.key", "-o", "cli.png", "--backbone", "closed-form"]
    assert main([*argv, "--recall", "standard"]) == 0
    _fixed(monkeypatch)
    anon = faceanon.anonymize_photo("a.png", key, faceanon.Settings(**FAST))  # type: ignore[arg-type]
    written = read_image(tmp_path / "cli.png")
    assert np.array_equal(anon.image, written.image) and anon.metadata == written.faceanon
    assert len(anon.boxes) == 1 and anon.coverage[0] is not None and anon.coverage[0] > 0.9
    # An array gives the same; the saved file restores with the key, not with another.
    _fixed(monkeypatch)
    again = faceanon.anonymize_photo(data.astronaut(), key, faceanon.Settings(**FAST))  # type: ignore[arg-type]
    assert np.array_equal(again.image, anon.image)
    faceanon.save_photo(anon, tmp_path / "api.png")
    with pytest.raises(FaceanonError, match="exists"):
        faceanon.save_photo(anon, tmp_path / "api.png")
    original = data.astronaut().astype(int)
    face = (anon.image != original).any(axis=-1)
    right = faceanon.restore_photo(tmp_path / "api.png", key).image
    wrong = faceanon.restore_photo(anon.image, key.with_bit_flipped(3), anon.metadata).image
    error = {
        n: np.abs(x.astype(int) - original)[face].mean()
        for n, x in {"anon": anon.image, "right": right, "wrong": wrong}.items()
    }
    # closed-form's noise is clipped by 8 bits, so its restore is approximate (test_web: mean
    # errors 58 anonymized, 14 right key, 61 one bit off).
    assert error["right"] < error["anon"] / 3 and error["wrong"] > 3 * error["right"], error


def test_settings_are_checked_when_made() -> None:
    for bad, message in [
        ({"method": "smudge"}, "method must be one of keyflip"),
        ({"mask": "hair"}, "mask must be one of landmarks"),
        ({"steps": 0}, "steps must be from 1 to 1000"),
        ({"inversion": "fixed-point:0"}, "inversion"),
        ({"transform": "rot13"}, "transform must be one of"),
        ({"strength": float("nan")}, "strength must be in"),
        ({"repeats": 11}, "repeats must be from 1 to 10"),
    ]:
        with pytest.raises(FaceanonError, match=message):
            faceanon.Settings(**bad)  # type: ignore[arg-type]
    with pytest.raises(FaceanonError, match="needs a key"):
        faceanon.anonymize_photo(data.astronaut())
    with pytest.raises(FaceanonError, match="uint8 RGB"):
        faceanon.anonymize_photo(np.zeros((8, 8)), settings=faceanon.Settings(method="blur"))
    with pytest.raises(FaceanonError, match="no faceanon metadata"):
        faceanon.restore_photo(data.astronaut(), faceanon.SecretKey.generate())


def test_the_evaluation_replaces_the_region_real_outputs_replace() -> None:
    # The evaluation pasted over the raw landmark outline; real outputs replace the outline as
    # the sealed metadata carries it, grown over the box (issue 30). Now the same pixels.
    from faceanon.anonymizer import Anonymizer
    from faceanon.backbones.closed_form import GaussianBackbone
    from faceanon.eval.methods import paste
    from faceanon.faces.finder import FaceFinder
    from faceanon.faces.replace import classic, keyflip
    from faceanon.media import photos

    image = data.astronaut()
    faces = FaceFinder(recall="standard").find(image)
    anonymizer = Anonymizer(GaussianBackbone(), steps=4)
    key, nonce = faceanon.SecretKey(bytes(range(16))), bytes(16)
    [out] = photos.anonymize(
        [image], [faces], "keyflip", anonymizer=anonymizer, key=key, nonces=[[nonce]]
    )
    grid = anonymizer.backbone.latent_shape[1:]
    sealed = paste(image, faces, keyflip(anonymizer, key, 8), [nonce], grid, sealed=True)
    assert np.array_equal(sealed, out.image)
    raw = paste(image, faces, keyflip(anonymizer, key, 8), [nonce], grid, sealed=False)
    assert not np.array_equal(raw, out.image)
    [blurred] = photos.anonymize([image], [faces], "blur")
    blur = classic(photos._classic("blur"))
    assert np.array_equal(blurred.image, paste(image, faces, blur, [None], (256, 256)))


def test_video_api_is_what_the_command_writes(tmp_path, monkeypatch) -> None:
    av = pytest.importorskip("av")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    def decoded(path: Path) -> tuple[bytes, list[np.ndarray]]:
        with av.open(str(path)) as container:
            attached = b"".join(bytes(s.data) for s in container.streams if s.type == "attachment")
            return attached, [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "c.mp4", 4, (640, 360), audio=False)
    key = faceanon.SecretKey(bytes(range(16)))
    (tmp_path / "k.key").write_text(key.to_text() + "\n")
    _fixed(monkeypatch)
    argv = ["anonymize", "c.mp4", "-k", "k.key", "-o", "cli.mkv", "--backbone", "closed-form"]
    assert main([*argv, "--recall", "standard", "--steps", "50"]) == 0  # 50: a close restore
    _fixed(monkeypatch)
    settings = faceanon.Settings(**FAST, steps=50)  # type: ignore[arg-type]
    summary = faceanon.anonymize_video("c.mp4", "api.mkv", key, settings)
    assert summary.frames == 4 and summary.faces >= 4
    cli, api = decoded(tmp_path / "cli.mkv"), decoded(tmp_path / "api.mkv")
    assert cli[0] == api[0] and all(
        np.array_equal(a, b) for a, b in zip(cli[1], api[1], strict=True)
    )
    faceanon.restore_video("api.mkv", "back.mkv", key)
    _, original = decoded(tmp_path / "c.mp4")
    _, back = decoded(tmp_path / "back.mkv")
    face = np.abs(api[1][3].astype(int) - original[3]).max(axis=-1) > 40  # H.264: not exact
    error = {
        n: np.abs(x[3].astype(int) - original[3])[face].mean()
        for n, x in {"anon": api[1], "back": back}.items()
    }
    assert error["back"] < error["anon"] / 3, error


def test_anonymize_folder_writes_what_the_command_writes(tmp_path, monkeypatch) -> None:
    """The folder call is the command's: same files byte for byte (fixed nonces), one row
    per input, a bad file a failed row and the others still done; the restore call brings
    the photo back and existing outputs are refused as the policy says."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    photo = data.astronaut()[::2, ::2]
    Image.fromarray(photo).save("in/a.png")
    Image.fromarray(photo[:, ::-1]).save("in/sub/b.png")
    (tmp_path / "in" / "broken.png").write_text("not an image")
    key = faceanon.SecretKey(bytes(range(16)))
    (tmp_path / "k.key").write_text(key.to_text() + "\n")
    _fixed(monkeypatch)
    argv = ["anonymize", "in", "-k", "k.key", "-o", "cli", "--backbone", "closed-form"]
    assert main([*argv, "--recall", "standard"]) == 1  # the broken file
    _fixed(monkeypatch)
    settings = faceanon.Settings(**FAST)  # type: ignore[arg-type]
    rows = list(faceanon.anonymize_folder("in", "api", key, settings))
    status = {row.input: row.status for row in rows}
    assert status == {"in/a.png": "written", "in/broken.png": "failed", "in/sub/b.png": "written"}
    failed = next(row for row in rows if row.status == "failed")
    assert failed.error is not None and failed.error.startswith("in/broken.png: not an image")
    for name in ("a_anonymized.png", "sub/b_anonymized.png"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    # Run again: the outputs exist, refused by default, kept with skip_existing.
    again = list(faceanon.anonymize_folder("in/sub", "api/sub", key, settings))
    assert [row.status for row in again] == ["failed"] and "already exists" in str(again[0].error)
    kept = faceanon.OutputPolicy(skip_existing=True)
    again = list(faceanon.anonymize_folder("in/sub", "api/sub", key, settings, kept))
    assert [row.status for row in again] == ["already done"]
    [back] = faceanon.restore_folder("api/a_anonymized.png", key, "back")
    assert back.status == "written" and back.output == "back/a_deanonymized.png"
    restored = read_image(tmp_path / back.output).image.astype(int)
    anonymized = read_image(tmp_path / "api" / "a_anonymized.png").image.astype(int)
    face = (anonymized != photo).any(axis=-1)
    assert np.abs(restored - photo)[face].mean() < np.abs(anonymized - photo)[face].mean() / 2
    with pytest.raises(FaceanonError, match="needs a key"):
        faceanon.anonymize_folder("in", "x")
    with pytest.raises(FaceanonError, match="engine must be one of local, ray"):
        faceanon.anonymize_folder("in", "x", key, engine="spark")


def test_video_api_writes_h264_at_the_crf_it_is_given(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    clip = make_clip(tmp_path / "c.mp4", 4, (640, 360), audio=False)
    blur = faceanon.Settings(method="blur", recall="standard")
    sizes = {}
    for crf in (10, 40):
        faceanon.anonymize_video(clip, tmp_path / f"{crf}.mp4", settings=blur, crf=crf)
        sizes[crf] = (tmp_path / f"{crf}.mp4").stat().st_size
    assert sizes[40] < sizes[10] / 2
    key = faceanon.SecretKey(bytes(16))
    for bad in (52, -1, 2.5, True):
        with pytest.raises(FaceanonError, match="crf must be"):
            faceanon.anonymize_video(clip, tmp_path / "bad.mp4", settings=blur, crf=bad)
        with pytest.raises(FaceanonError, match="crf must be"):
            faceanon.restore_video(tmp_path / "10.mp4", tmp_path / "bad.mp4", key, crf=bad)
    assert not (tmp_path / "bad.mp4").exists()
