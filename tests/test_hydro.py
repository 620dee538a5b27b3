"""The irreversible mode (issue 12, part 2): ``--method hydro``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import psnr
from PIL import Image
from skimage import data

from faceanon.anonymizer import Anonymizer
from faceanon.apps.cli import main
from faceanon.faces.masks import EllipseMask
from faceanon.secure.keys import SecretKey


def test_deidentify_changes_the_face_keeps_the_outside_and_is_random(face, closed_form):
    anonymizer = Anonymizer(closed_form, steps=20)
    mask = EllipseMask()
    inside = mask.grid(256, 256)
    a = anonymizer.deidentify([face], [mask], seed=1)[0]
    b = anonymizer.deidentify([face], [mask], seed=1)[0]
    c = anonymizer.deidentify([face], [mask], seed=2)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # fresh randomness each run
    assert psnr(a, face, inside) < 15  # the face is replaced
    # Outside the mask the latent is the input's exactly: the crop equals the input passed
    # through the autoencoder alone (photos paste back only the face region).
    from faceanon.anonymizer import to_tensor, to_uint8

    plain = to_uint8(closed_form.decode(closed_form.encode(to_tensor([face], 256))))[0]
    cells = mask.grid(64, 64).repeat(4, axis=0).repeat(4, axis=1)
    assert np.array_equal(a[~cells], plain[~cells])


def test_no_key_undoes_it(face, closed_form):
    anonymizer = Anonymizer(closed_form, steps=20, transform="flip")
    mask = EllipseMask()
    inside = mask.grid(256, 256)
    key = SecretKey.generate()
    nonce = [bytes(16)]
    flipped = anonymizer.apply([face], key, [mask], nonce)[0]
    restored = anonymizer.apply([flipped], key, [mask], nonce, undo=True)[0]
    assert psnr(restored, face, inside) > 20  # the reversible map, for scale
    hydro = anonymizer.deidentify([face], [mask], strength=0.6, seed=3)[0]
    for k in range(8):  # keys an attacker might try, the throw-away one among none of them
        guess = anonymizer.apply([hydro], SecretKey(bytes([k]) * 16), [mask], nonce, undo=True)
        assert psnr(guess[0], face, inside) < psnr(restored, face, inside) - 8


@pytest.mark.parametrize("strength", ["0", "1.5", "nan", "x"])
def test_strength_is_checked(strength, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["anonymize", "x.png", "--method", "hydro", "--strength", strength])
    assert exit_info.value.code == 2
    assert "is not a strength in (0, 1]" in capsys.readouterr().err


def test_hydro_photo_writes_no_key_material_and_cannot_be_restored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photo = data.astronaut()
    Image.fromarray(photo).save("astro.png")
    args = ["anonymize", "astro.png", "--method", "hydro", "--backbone", "closed-form"]
    assert main([*args, "--steps", "20"]) == 0
    out = Image.open("astro_anonymized.png")
    meta = json.loads(out.text["faceanon"])
    assert meta["method"] == "hydro" and "sealed" not in meta
    assert all(f["nonce"] is None for f in meta["faces"]) and meta["backbone"] is None
    changed = (np.asarray(out.convert("RGB")) != photo).any(axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 3000 and ys.max() - ys.min() < 200 and xs.max() - xs.min() < 200
    assert main(["keygen", "-o", "my.key"]) == 0
    assert main(["deanonymize", "astro_anonymized.png", "-k", "my.key"]) == 1
    assert "made with --method hydro: not reversible" in capsys.readouterr().err
