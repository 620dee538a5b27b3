"""The command line: key files, anonymize -> deanonymize through PNG metadata, bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, psnr
from PIL import Image

from faceanon.apps.cli import main
from faceanon.faces.masks import EllipseMask

REGION = np.repeat(np.repeat(EllipseMask().grid(64, 64), 4, 0), 4, 1)
FAST = ["--backbone", "closed-form", "--steps", "50", "--aligned"]


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "face.png")
    assert main(["keygen", "-o", "my.key"]) == 0
    return tmp_path


def _grown(region: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line]


def test_help_does_not_import_torch():
    code = "import sys, faceanon.apps.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_keygen(work, capsys):
    text = (work / "my.key").read_text()
    assert "FAK1-" in text and oct(os.stat(work / "my.key").st_mode)[-3:] == "600"
    assert main(["keygen", "-o", "my.key"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (work / "my.key").read_text() == text
    assert main(["keygen", "-o", "big.key", "--bits", "256"]) == 0
    assert len((work / "big.key").read_text().splitlines()[1].replace("-", "")) == 62


def test_keygen_passphrase(work, monkeypatch):
    monkeypatch.setenv("FACEANON_PASSPHRASE", "a long passphrase")
    assert main(["keygen", "-o", "pass.key", "--passphrase"]) == 0
    assert "FAP1:scrypt:17:8:1:128:" in (work / "pass.key").read_text()


def test_anonymize_then_deanonymize(work, capsys):
    original = np.asarray(Image.open("face.png").convert("RGB"))
    before = (work / "face.png").read_bytes()
    assert main(["anonymize", "face.png", "-k", "my.key", *FAST]) == 0
    assert (work / "face.png").read_bytes() == before  # input untouched
    anon_path = work / "face_anonymized.png"
    with Image.open(anon_path) as img:
        assert '"nonce":"' in img.text["faceanon"] and '"steps":50' in img.text["faceanon"]
        anon = np.asarray(img.convert("RGB"))
    # Only the image and the key: backbone, steps, nonce and mask come from the PNG.
    assert main(["deanonymize", "face_anonymized.png", "-k", "my.key"]) == 0
    restored = np.asarray(Image.open(work / "face_deanonymized.png"))
    assert psnr(restored, original, REGION) > psnr(anon, original, REGION) + 8
    assert (
        "anonymized: files 1, written 1, faces 1, skipped (no face) 0, failed 0"
        in capsys.readouterr().err
    )
    assert sorted(p.name for p in work.iterdir()) == [
        "face.png",
        "face_anonymized.png",
        "face_deanonymized.png",
        "my.key",
    ]


def test_wrong_key_gives_another_face(work):
    assert main(["anonymize", "face.png", "-k", "my.key", *FAST]) == 0
    assert main(["keygen", "-o", "other.key"]) == 0
    assert main(["deanonymize", "face_anonymized.png", "-k", "my.key", "-o", "right"]) == 0
    assert main(["deanonymize", "face_anonymized.png", "-k", "other.key", "-o", "wrong"]) == 0
    original = np.asarray(Image.open("face.png").convert("RGB"))
    right = np.asarray(Image.open("right/face_deanonymized.png"))
    wrong = np.asarray(Image.open("wrong/face_deanonymized.png"))
    assert psnr(wrong, original, REGION) < psnr(right, original, REGION) - 8


def test_outputs_folder_single_file_and_no_overwrite(work, capsys):
    assert main(["anonymize", "face.png", "-k", "my.key", "-o", "out", *FAST]) == 0
    assert (work / "out" / "face_anonymized.png").is_file()
    assert main(["anonymize", "face.png", "-k", "my.key", "-o", "named.png", *FAST]) == 0
    assert (work / "named.png").is_file()
    first = (work / "named.png").read_bytes()
    assert main(["anonymize", "face.png", "-k", "my.key", "-o", "named.png", *FAST]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (work / "named.png").read_bytes() == first
    assert (
        main(["anonymize", "face.png", "-k", "my.key", "-o", "named.png", "--overwrite", *FAST])
        == 0
    )
    assert main(["anonymize", "face.png", "-k", "my.key", "-o", "face.png", *FAST]) == 2
    assert "overwrite an input" in capsys.readouterr().err


def _split(name: str, data: bytes) -> tuple[bytes, bytes, str | None]:
    """A lossy output's bytes without its exact face data, that data, and its metadata."""
    from faceanon.media import webp
    from faceanon.media.latents import split_jpeg

    if name.endswith(".jpg"):
        stripped, segments = split_jpeg(data)
        comment = Image.open(io.BytesIO(data)).info.get("comment", b"")
        return stripped, b"".join(segments), comment.decode()
    chunks = webp.read_chunks(data, [webp.LATENTS, webp.METADATA])
    meta = chunks[webp.METADATA].decode() if webp.METADATA in chunks else None
    return webp.remove_chunks(data, [webp.LATENTS]), chunks.get(webp.LATENTS, b""), meta


def _with(name: str, stripped: bytes, data: bytes, size: tuple[int, int]) -> bytes:
    from faceanon.media import webp

    if name.endswith(".jpg"):
        return stripped[:2] + data + stripped[2:]
    return webp.add_chunks(stripped, [(webp.LATENTS, data)], *size)


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_output_carries_exact_faces_and_restores_as_png_does(work, capsys, suffix):
    """A keyflip JPEG or WebP carries its faces' exact latents (media.latents): at quality 75
    it restores as well as the PNG, where its pixels alone lose several dB. Stripped of that
    data, the restore says so in one line and uses the pixels; another image's data is
    refused the same way; both still restore a face."""
    original = np.asarray(Image.open("face.png").convert("RGB"))
    anon, other = "anon" + suffix, "other" + suffix
    for name in ("anon.png", anon, other):
        quality = ["--quality", "75"] if name != "anon.png" else []
        assert main(["anonymize", "face.png", "-k", "my.key", "-o", name, *quality, *FAST]) == 0
    assert "lossy" not in capsys.readouterr().err
    stripped, data, meta = _split(anon, Path(anon).read_bytes())
    assert data and meta is not None and meta.startswith('{"faceanon"')
    assert _split(anon, stripped)[1] == b""
    Path("stripped" + suffix).write_bytes(stripped)
    size = Image.open(anon).size
    foreign = _with(anon, stripped, _split(other, Path(other).read_bytes())[1], size)
    Path("foreign" + suffix).write_bytes(foreign)
    restored = {}
    for name in ("anon.png", anon, "stripped" + suffix, "foreign" + suffix):
        assert main(["deanonymize", name, "-k", "my.key", "-o", f"back-{name}.png"]) == 0
        restored[name] = psnr(np.asarray(Image.open(f"back-{name}.png")), original, REGION)
    err = capsys.readouterr().err
    assert f"stripped{suffix}: no exact face data in this lossy file; restoring from the" in err
    assert f"foreign{suffix}: exact face data belongs to another image" in err
    assert f"{anon}:" not in err.replace(f"{anon} -> ", "")
    lossy = psnr(np.asarray(Image.open(anon).convert("RGB")), original, REGION)
    assert abs(restored[anon] - restored["anon.png"]) < 0.5, restored
    assert restored["stripped" + suffix] < restored[anon] - 2, restored
    assert restored["foreign" + suffix] < restored[anon] - 2, restored
    assert restored["stripped" + suffix] > lossy + 5, (restored, lossy)
    untouched = np.asarray(Image.open(anon).convert("RGB"))
    assert psnr(untouched, original, ~REGION) > 30  # the lossy copy of the untouched part


def test_a_grey_photo_stays_grey_and_restores_from_its_coloured_faces(work, capsys):
    """A black-and-white photo's new face is grey too (not the model's colours), and so is its
    restore. The restore starts from the exact latents of the coloured face, which the PNG
    carries; stripped of them, it says so in one line and restores from the grey pixels,
    much worse."""
    from PIL import PngImagePlugin

    from faceanon.media.io import is_grey

    grey = np.asarray(Image.open("face.png").convert("L").convert("RGB"))
    Image.fromarray(grey).save("grey.png")
    assert main(["anonymize", "grey.png", "-k", "my.key", "-o", "anon.png", *FAST]) == 0
    written = Image.open("anon.png")
    anon = np.asarray(written.convert("RGB"))
    assert is_grey(anon) and np.abs(anon.astype(int) - grey)[REGION].mean() > 10
    info = PngImagePlugin.PngInfo()
    info.add_itxt("faceanon", written.text["faceanon"])
    assert "faceanon-latents" in written.text
    written.save("stripped.png", pnginfo=info)
    capsys.readouterr()
    restored = {}
    for name in ("anon.png", "stripped.png"):
        assert main(["deanonymize", name, "-k", "my.key", "-o", f"back-{name}"]) == 0
        back = np.asarray(Image.open(f"back-{name}").convert("RGB"))
        assert is_grey(back)
        restored[name] = psnr(back, grey, REGION)
    err = capsys.readouterr().err
    assert "stripped.png: no exact face data, which a keyflip file of a grey photo needs" in err
    assert "anon.png: no exact" not in err
    assert restored["anon.png"] > psnr(anon, grey, REGION) + 8, restored
    assert restored["stripped.png"] < restored["anon.png"] - 3, restored


def test_inversion_is_recorded_and_used(work, capsys):
    """Fixed-point inversion restores better at the same T, and deanonymize takes it from the
    file; a bad --inversion is a usage error."""
    original = np.asarray(Image.open("face.png").convert("RGB"))
    restored = {}
    for inversion in ("ddim", "fixed-point:2"):
        args = ["--inversion", inversion, "-o", f"{inversion}.png"]
        fast = ["--backbone", "closed-form", "--steps", "10", "--aligned"]
        assert main(["anonymize", "face.png", "-k", "my.key", *args, *fast]) == 0
        meta = json.loads(Image.open(f"{inversion}.png").text["faceanon"])
        assert meta["inversion"] == inversion and meta["steps"] == 10
        assert main(["deanonymize", f"{inversion}.png", "-k", "my.key"]) == 0
        restored[inversion] = psnr(
            np.asarray(Image.open(f"{inversion}_deanonymized.png")), original, REGION
        )
    # Measured 17.3 dB with ddim, 22.5 dB with fixed-point:2 (T = 10).
    assert restored["fixed-point:2"] > restored["ddim"] + 3, restored
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["anonymize", "face.png", "-k", "my.key", "--inversion", "fixed-point:99", *FAST])
    assert info.value.code == 2 and "fixed-point:K" in capsys.readouterr().err


def test_paper_mode_without_metadata(work, capsys):
    assert main(["anonymize", "face.png", "-k", "my.key", "--paper-mode", *FAST]) == 0
    stripped = work / "stripped.png"
    Image.open(work / "face_anonymized.png").save(stripped)  # re-saved: metadata gone
    assert main(["deanonymize", "stripped.png", "-k", "my.key"]) == 1
    assert "no faceanon metadata" in capsys.readouterr().err
    assert main(["deanonymize", "stripped.png", "-k", "my.key", "--paper-mode", *FAST]) == 0
    original = np.asarray(Image.open("face.png").convert("RGB"))
    anon = np.asarray(Image.open("stripped.png"))
    restored = np.asarray(Image.open("stripped_deanonymized.png"))
    assert psnr(restored, original, REGION) > psnr(anon, original, REGION) + 8


def _make_bad_inputs(folder: Path) -> dict[str, str]:
    (folder / "text.png").write_text("this is not an image")
    (folder / "empty.png").write_bytes(b"")
    data = (folder / "face.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (300, 200)).save(folder / "small.png")
    return {
        "text.png": "not an image",
        "empty.png": "empty file",
        "truncated.png": "corrupt or truncated",
        "small.png": "wrong size 300x200",
        "missing.png": "file not found",
    }


def test_bad_images_one_line_each_and_the_batch_goes_on(work, capsys):
    expected = _make_bad_inputs(work)
    names = [*expected, "face.png"]
    assert main(["anonymize", *names, "-k", "my.key", *FAST]) == 1
    errors = _errors(capsys)
    assert len(errors) == len(expected)
    for name, problem in expected.items():
        assert any(name in line and problem in line for line in errors), (name, errors)
    assert (work / "face_anonymized.png").is_file()
    assert not (work / "text_anonymized.png").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "key file not found"),
        ("FAK1-AAAQ-EAYE-AUDA\n", "wrong length"),
        ("FAK1-AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B5P4-NOVM\n", "mistyped"),
        ("hello\n", "not a faceanon key"),
    ],
)
def test_bad_key_files(work, capsys, content, problem):
    if content is not None:
        (work / "bad.key").write_text(content)
    assert main(["anonymize", "face.png", "-k", "bad.key", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.key" in err[0] and problem in err[0]
    assert not (work / "face_anonymized.png").exists()


def test_offline_photo_real_backbone_says_what_to_do(work, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(work / "empty-cache"))
    args = ["anonymize", "face.png", "-k", "my.key", "--aligned", "--backbone", "ldm-celebahq-256"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backbone face-prior" in err[0] and "--model-dir" in err[0]


def test_tiny_backbone_smoke_run(work):
    assert (
        main(
            [
                "anonymize",
                "face.png",
                "-k",
                "my.key",
                "--backbone",
                "tiny",
                "--steps",
                "3",
                "--aligned",
            ]
        )
        == 0
    )
    assert main(["deanonymize", "face_anonymized.png", "-k", "my.key"]) == 0
    original = np.asarray(Image.open("face.png").convert("RGB"))
    # Only the face and its feathered rim are replaced: everything farther than 12 px from the
    # mask is the input, byte for byte; inside, the random model paints something else.
    far = ~_grown(REGION, 12)
    for name in ("face_anonymized.png", "face_deanonymized.png"):
        out = np.asarray(Image.open(work / name))
        assert np.array_equal(out[far], original[far])
        assert np.abs(out[REGION].astype(int) - original[REGION]).mean() > 10


def test_models_lists_the_registry(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    # A model not downloaded yet says where it will go.
    assert f"not downloaded yet; first use caches it under {tmp_path / 'hub'}" in out
    assert "face-prior (default)" in out and "embedded in the package" in out
    assert "non-commercial research use only" in out and " MB)" in out
    assert "CompVis/ldm-celebahq-256@" in out and "tiny" in out and "closed-form" in out


def test_batches_of_several_files(work):
    shutil.copy(work / "face.png", work / "second.png")
    args = ["-k", "my.key", "--batch-size", "2"]
    assert main(["anonymize", "face.png", "second.png", *args, *FAST]) == 0
    anon = ["face_anonymized.png", "second_anonymized.png"]
    # Different nonces per file, even within one network batch.
    assert not np.array_equal(*(np.asarray(Image.open(work / name)) for name in anon))
    assert main(["deanonymize", *anon, *args]) == 0
    original = np.asarray(Image.open("face.png").convert("RGB"))
    for name in ("face_deanonymized.png", "second_deanonymized.png"):
        restored = np.asarray(Image.open(work / name))
        assert (
            psnr(restored, original, REGION)
            > psnr(np.asarray(Image.open(anon[0])), original, REGION) + 8
        )


def test_summary_counts_faces_per_photo(work, capsys):
    """The summary line says how many photos had how many faces (0 for the skipped ones)."""
    from skimage import data

    folder = work / "shoot"
    folder.mkdir()
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(folder / "one.png")
    Image.fromarray(np.hstack([astronaut, astronaut])).save(folder / "two.png")
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(folder / "none.png")
    assert main(["anonymize", "shoot", "-o", "out", "--method", "blur"]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "files 3, written 2, faces 3, skipped (no face) 1" in summary
    assert summary.endswith("; photos by faces found: 0 faces x1, 1 face x1, 2 faces x1")


def test_video_rates_say_seconds_per_frame_when_slow() -> None:
    from faceanon.apps.photo_commands import rate

    assert rate(7.04) == "7.0 fps"
    assert rate(0.04) == "25.0 s per frame"  # not "0.0 fps"
