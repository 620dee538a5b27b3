"""Invariants of the keyed derivations that no round trip shows (issue 27): each one fails on a
mutation that left every other test green (the closing note lists which test catches which)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import composite
from PIL import Image

from faceanon.apps.cli import main
from faceanon.faces.masks import LandmarkMask
from faceanon.media.io import read_image
from faceanon.secure.container import Metadata
from faceanon.secure.keys import PassphraseSpec, SecretKey
from faceanon.secure.seal import open_face, seal_face

FAST = ["--backbone", "closed-form", "--steps", "4", "--recall", "standard", "--upright-only"]


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "-o", "my.key"]) == 0
    return tmp_path


def _metadata(path: str) -> Metadata:
    text = read_image(Path(path)).faceanon
    assert text is not None
    return Metadata.from_json(text)


def test_every_face_and_every_run_has_its_own_nonces(work) -> None:
    canvas, _ = composite(scales=(1.0, 0.5, 0.35))
    Image.fromarray(canvas).save("group.png")
    assert main(["anonymize", "group.png", "-k", "my.key", "-o", "a.png", *FAST]) == 0
    assert main(["anonymize", "group.png", "-k", "my.key", "-o", "b.png", *FAST]) == 0
    a, b = _metadata("a.png"), _metadata("b.png")
    faces_a = [f.nonce for f in a.faces]
    faces_b = [f.nonce for f in b.faces]
    assert len(faces_a) == 3 and None not in faces_a
    assert len(set(faces_a)) == 3, "two faces of one photo share a nonce"
    assert not set(faces_a) & set(faces_b), "a nonce came back in another run"
    assert a.sealed is not None and b.sealed is not None
    assert a.sealed[0] != b.sealed[0], "two photos sealed under one seal nonce"


def test_every_track_and_every_frame_seal_has_its_own_nonce(work) -> None:
    av = pytest.importorskip("av")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    make_clip(work / "two.mp4", 6, (640, 270), copies=2, audio=False)
    assert main(["anonymize", "two.mp4", "-k", "my.key", *FAST]) == 0
    from faceanon.media.codec import read_document

    with av.open("two_anonymized.mp4") as container:
        metadata, _ = read_document(Path("two_anonymized.mp4"), container)
    frames = [json.loads(m) for m in metadata if m is not None]
    assert len(frames) == 6
    for m in frames:  # two people in each frame, two tracks: two nonces
        nonces = [f["nonce"] for f in m["faces"]]
        assert len(nonces) >= 2 and len(set(nonces)) == len(nonces), "tracks share a nonce"
    seals = [m["sealed"]["nonce"] for m in frames]
    assert len(set(seals)) == len(seals), "two frames sealed under one seal nonce"


def test_the_seal_keystream_depends_on_key_nonce_and_face() -> None:
    key = SecretKey(bytes(range(16)))
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    outline = np.stack([128 + 70 * np.cos(angles), 140 + 90 * np.sin(angles)], axis=1)
    mask = LandmarkMask(outline, 256)
    blob = seal_face(key, b"\x01" * 16, 0, mask)[0]
    assert blob != seal_face(key, b"\x02" * 16, 0, mask)[0], "keystream ignores the nonce"
    assert blob != seal_face(key, b"\x01" * 16, 1, mask)[0], "keystream ignores the face"
    assert blob != seal_face(SecretKey(bytes(16)), b"\x01" * 16, 0, mask)[0]
    # Opened as another face, the same bytes give another polygon.
    here = open_face(key, b"\x01" * 16, 0, blob, 256)
    there = open_face(key, b"\x01" * 16, 1, blob, 256)
    assert not np.array_equal(here.grid(64, 64), there.grid(64, 64))


def test_scrypt_cost_is_the_documented_one() -> None:
    spec = PassphraseSpec.new()
    # README "Keys": 128 MiB of memory per guess (2^17 * 128 * 8 bytes), one pass.
    assert (spec.log2_n, spec.r, spec.p) == (17, 8, 1)
    assert spec.memory == 128 * 2**20
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "128 MiB" in readme
