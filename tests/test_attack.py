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
        steps=100,
        batch=8,
        width=16,
        seed=0,
        checkpoint=tmp_path / "r.pt",
        progress=lambda step, total, loss: seen.append(step),
    )
    after = float((attack.reconstruct(model, tx) - ty).abs().mean())
    assert record.steps == 100 and seen[-1] == 100
    assert np.mean(record.losses[-20:]) < np.mean(record.losses[:20])
    assert after < 0.8 * before  # held-out faces come back sharper than the blurred input
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
