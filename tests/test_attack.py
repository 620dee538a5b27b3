"""The reconstruction attack (issue 12, part 1): it trains, and beats the untrained network."""

from __future__ import annotations

import numpy as np
import torch

from faceanon.eval import attack
from faceanon.methods.classic import Blur


def _toy_faces(face: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """Crops of the public-domain example face, shifted, scaled and tinted: 64 x 64."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        side = int(rng.integers(150, 230))
        x, y = (int(v) for v in rng.integers(0, 256 - side, 2))
        crop = cv2.resize(face[y : y + side, x : x + side], (64, 64), interpolation=cv2.INTER_AREA)
        tint = rng.uniform(0.8, 1.2, 3)
        out.append(np.clip(crop * tint, 0, 255).astype(np.uint8))
    return out


def test_the_attack_learns_to_undo_blur(face, tmp_path):
    blur = Blur(0.05)
    train_faces, test_faces = _toy_faces(face, 96, 0), _toy_faces(face, 16, 1)
    x, y = attack.to_batch(blur(train_faces)), attack.to_batch(train_faces)
    tx, ty = attack.to_batch(blur(test_faces)), attack.to_batch(test_faces)
    untrained = attack.Reconstructor(width=16)
    before = float((attack.reconstruct(untrained, tx) - ty).abs().mean())
    seen = []
    model, record = attack.train(
        x,
        y,
        steps=40,
        batch=8,
        width=16,
        seed=0,
        checkpoint=tmp_path / "r.pt",
        progress=lambda step, total, loss: seen.append(step),
    )
    after = float((attack.reconstruct(model, tx) - ty).abs().mean())
    assert record.steps == 40 and seen[-1] == 40
    assert np.mean(record.losses[-10:]) < np.mean(record.losses[:10])
    assert after < 0.8 * before  # measured 0.60x: held-out faces come back sharper
    # The checkpoint reloads to the same network; the same seed trains the same weights.
    again = attack.load(tmp_path / "r.pt")
    torch.testing.assert_close(attack.reconstruct(again, tx), attack.reconstruct(model, tx))
    twin, _ = attack.train(x, y, steps=3, batch=8, width=16, seed=0)
    other, _ = attack.train(x, y, steps=3, batch=8, width=16, seed=0)
    for a, b in zip(twin.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_untrained_network_returns_the_published_face(face):
    batch = attack.to_batch(_toy_faces(face, 2, 3))
    torch.testing.assert_close(attack.reconstruct(attack.Reconstructor(), batch), batch)


def test_the_attack_on_a_method_of_the_evaluation(face, tmp_path, closed_form):
    """attack_method: the attacker's faces (64-px crops, framed for the detector), pairs made
    by the method, a network that lowers the held-out error; the reconstructed condition
    changes the published photo inside the face region only and brings the face closer."""
    import cv2
    from PIL import Image

    from faceanon.anonymizer import Anonymizer
    from faceanon.eval.methods import ClassicMethod, HydroMethod, KeyflipMethod
    from faceanon.eval.protocols import face_region, quality
    from faceanon.faces.finder import FaceFinder
    from faceanon.secure.keys import SecretKey

    folder = tmp_path / "attacker"
    folder.mkdir()
    for i, crop in enumerate(_toy_faces(face, 40, 4)):
        Image.fromarray(crop).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image")  # skipped, not fatal
    finder = FaceFinder(sideways=False, recall="standard")
    photos = attack.training_photos(folder, 30, finder, seed=0)
    assert len(photos) == 30 and all(p.shape[0] >= 128 for p, _ in photos)

    blur = ClassicMethod("blur 0.05", Blur(0.05))
    attacked = attack.attack_method(
        blur, photos, minutes=5, steps=40, batch=8, width=16, checkpoint=tmp_path / "b.pt"
    )
    record = attacked.record
    assert record["training_pairs"] == 27 and record["steps"] == 40
    # Learning itself is tested above; here: the held-out measurement sees it.
    assert record["held_out_l1_reconstructed"] < 0.99 * record["held_out_l1_published"]
    assert (tmp_path / "b.pt").is_file()

    photo = np.ascontiguousarray(face)
    faces = finder.find(photo)
    out = attacked.run(photo, faces, "probe")
    published, rebuilt = out["blur 0.05"], out["blur 0.05 -> reconstructed"]
    region = face_region(photo.shape, faces)
    changed = np.any(published != rebuilt, axis=-1)
    assert changed.any()
    # Outside the region the method replaced (the face grown over its box, as real outputs)
    # grown by the paste's feather band: untouched.
    replaced = region | np.any(published != photo, axis=-1)
    grown = cv2.dilate(replaced.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    assert not changed[~grown].any()
    assert (
        quality(photo, rebuilt, region)["psnr_face"]
        > quality(photo, published, region)["psnr_face"]
    )

    # The attacker's keyflip pairs use keys of their own, never the evaluation's.
    anonymizer = Anonymizer(closed_form, 5, transform="flip")
    keyflip = KeyflipMethod(anonymizer, SecretKey(bytes(16)), seed=0)
    mine = keyflip.run(photo, faces, "probe")["keyflip: anonymized"]
    theirs = keyflip.publish([photo], [faces], seed=1)[0]
    assert np.abs(mine.astype(int) - theirs).mean() > 1
    # Hydro in the evaluation: repeatable per image name, another face for another name.
    hydro = HydroMethod(anonymizer, 0.5, seed=0)
    first = hydro.run(photo, faces, "a")["hydro 0.5"]
    assert np.array_equal(first, hydro.run(photo, faces, "a")["hydro 0.5"])
    assert not np.array_equal(first, hydro.run(photo, faces, "b")["hydro 0.5"])


def test_the_identity_loss_attacker_beats_the_untrained_network(face):
    """With the identity loss (a differentiable recognizer beside L1) the attacker still
    learns: held-out reconstructions are closer to the originals in pixels and for the
    recognizer than the published faces, and the loss changes what is learnt."""
    from faceanon.faces.torch_recognizers import crop_recognizer

    blur = Blur(0.04)  # Blur(0.08) left SFace too little to learn from in 20 steps (below)
    train_faces, test_faces = _toy_faces(face, 24, 0), _toy_faces(face, 12, 1)
    x, y = attack.to_batch(blur(train_faces)), attack.to_batch(train_faces)
    tx, ty = attack.to_batch(blur(test_faces)), attack.to_batch(test_faces)
    sface = crop_recognizer("sface")

    def scores(model: attack.Reconstructor) -> tuple[float, float]:
        rebuilt = attack.reconstruct(model, tx)
        with torch.no_grad():
            cosine = 1.0 - float(attack.identity_loss(sface, rebuilt, attack.embed(sface, ty)))
        return float((rebuilt - ty).abs().mean()), cosine

    l1_before, cos_before = scores(attack.Reconstructor(width=16))
    model, record = attack.train(
        x, y, steps=20, batch=4, width=16, lr=3e-3, seed=0, identity=sface, identity_weight=1.0
    )
    l1_after, cos_after = scores(model)
    assert record.steps == 20
    # Measured (Intel Xeon): L1 .149 -> .128, cosine .272 -> .402 with 2 torch threads, .130
    # and .406 with 1 (the plain L1 attacker: .106 / .370). With Blur(0.08) the cosine went
    # .117 -> .183 with 2 threads but only .136 with 1: too close to the untrained network.
    scores_seen = (l1_before, l1_after, cos_before, cos_after)
    assert l1_after < 0.97 * l1_before and cos_after > 1.2 * cos_before, scores_seen
    plain, _ = attack.train(x, y, steps=20, batch=4, width=16, lr=3e-3, seed=0)  # no identity
    assert any(
        not torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters(), strict=True)
    )
