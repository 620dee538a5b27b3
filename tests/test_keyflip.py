"""The method end to end in latent space with the closed-form backbone, and through the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import psnr

from faceanon.anonymizer import Anonymizer, to_tensor, to_uint8
from faceanon.errors import ImageError
from faceanon.faces.masks import EllipseMask
from faceanon.methods.keyflip import keyflip_latent
from faceanon.secure.keys import SecretKey, sign_vector

KEY = SecretKey(bytes(range(16)))
STEPS = 50


def _setup(backbone, batch=4):
    g = torch.Generator().manual_seed(2)
    z0 = backbone.mu + backbone.sigma * torch.randn(batch, *backbone.latent_shape, generator=g)
    nonces = [bytes([i]) * 16 for i in range(batch)]
    mask = torch.from_numpy(EllipseMask().grid(64, 64))[None, None].expand(batch, 1, 64, 64)
    return z0, nonces, mask


def _signs(key, nonces, shape):
    return torch.from_numpy(np.stack([sign_vector(key, shape, n) for n in nonces]))


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_keyflip_latent_recovers_with_right_key_only(closed_form):
    z0, nonces, mask = _setup(closed_form)
    shape = closed_form.latent_shape
    inside = mask.expand_as(z0)
    signs = _signs(KEY, nonces, shape)
    anon = keyflip_latent(closed_form, z0, signs, mask, STEPS)
    restored = keyflip_latent(closed_form, anon, signs, mask, STEPS)

    # Outside the mask: exactly the original latent.
    assert torch.equal(anon[~inside], z0[~inside])
    assert torch.equal(restored[~inside], z0[~inside])

    # Inside: anonymization moves the face far; the right key brings it back within twice the
    # plain inversion round-trip error (two round trips are made).
    levels = closed_form.schedule.levels(STEPS)
    from faceanon.diffusion.loops import invert, sample

    roundtrip = sample(closed_form.eps, invert(closed_form.eps, z0, levels)[-1], levels)
    inversion_error = _rms((roundtrip - z0)[inside])
    right = _rms((restored - z0)[inside])
    assert _rms((anon - z0)[inside]) > 5 * right
    assert right <= 2.5 * inversion_error

    # Wrong keys (one bit off, random) do not.
    for wrong_key in (KEY.with_bit_flipped(77), SecretKey.generate()):
        wrong = keyflip_latent(closed_form, anon, _signs(wrong_key, nonces, shape), mask, STEPS)
        assert _rms((wrong - z0)[inside]) > 4 * right
        assert torch.equal(wrong[~inside], z0[~inside])

    # The right key with another image's nonce is a wrong key too.
    shifted = _signs(KEY, nonces[1:] + nonces[:1], shape)
    assert _rms((keyflip_latent(closed_form, anon, shifted, mask, STEPS) - z0)[inside]) > 4 * right


def test_recovery_error_shrinks_with_steps(closed_form):
    z0, nonces, mask = _setup(closed_form, batch=2)
    inside = mask.expand_as(z0)
    signs = _signs(KEY, nonces, closed_form.latent_shape)
    errors = []
    for steps in (10, 50, 100):
        anon = keyflip_latent(closed_form, z0, signs, mask, steps)
        errors.append(_rms((keyflip_latent(closed_form, anon, signs, mask, steps) - z0)[inside]))
    assert errors[0] > errors[1] > errors[2]


class _Mixing:
    """The closed-form predictor plus a term that mixes neighbouring latents, as a UNet does."""

    def __init__(self) -> None:
        from faceanon.backbones.closed_form import GaussianBackbone

        self.exact = GaussianBackbone()
        for name in ("name", "revision", "image_size", "latent_shape", "schedule", "device"):
            setattr(self, name, getattr(self.exact, name))
        self.encode, self.decode = self.exact.encode, self.exact.decode

    def eps(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        mixed = torch.nn.functional.avg_pool2d(latents, 5, stride=1, padding=2)
        return self.exact.eps(latents, timestep) + 0.3 * mixed


def test_batch_of_different_masks_equals_one_by_one(face):
    """Each face keeps its own mask in a batch (a model that mixes neighbours would carry a
    wrong mask's changes into the face next to it), and outside it nothing changes."""
    backbone = _Mixing()
    anonymizer = Anonymizer(backbone, steps=5)  # type: ignore[arg-type]
    faces = [face, face[:, ::-1].copy(), np.roll(face, 30, axis=0)]
    masks = [EllipseMask(), EllipseMask(0.3, 0.4, 0.2, 0.25), EllipseMask(0.7, 0.7, 0.25, 0.2)]
    nonces = [bytes([i]) * 16 for i in range(3)]
    batched = anonymizer.apply(faces, KEY, masks, nonces)
    ref = to_uint8(backbone.decode(backbone.encode(to_tensor(faces, 256))))
    for i in range(3):
        single = anonymizer.apply(faces[i : i + 1], KEY, masks[i : i + 1], nonces[i : i + 1])[0]
        assert np.abs(single.astype(int) - batched[i]).max() <= 1
        region = np.repeat(np.repeat(masks[i].grid(64, 64), 4, 0), 4, 1)
        assert np.array_equal(batched[i][~region], ref[i][~region])
        assert np.abs(batched[i][region].astype(int) - ref[i][region]).mean() > 20


def test_progress_is_reported(closed_form):
    z0, nonces, mask = _setup(closed_form, batch=1)
    calls: list[tuple[int, int]] = []
    keyflip_latent(
        closed_form,
        z0,
        _signs(KEY, nonces, closed_form.latent_shape),
        mask,
        5,
        lambda done, total: calls.append((done, total)),
        refine=2,
    )
    assert calls == [(i, 16) for i in range(1, 17)]  # network calls: 5 x 2 + 1 + 5


def test_api_round_trip_on_real_face(closed_form, face):
    # flip: the closed-form model's samples leave the image range (~4% of the masked latents
    # for mixed noise), so with mix the uint8 image clips them and the restore stops at ~31 dB;
    # in latent space both transforms restore equally (tests/test_transforms.py).
    anonymizer = Anonymizer(closed_form, steps=100, transform="flip")
    result = anonymizer.anonymize(face, KEY)
    assert result.image.shape == face.shape and result.image.dtype == np.uint8
    assert result.nonce is not None and len(result.nonce) == 16
    assert (result.backbone, result.steps, result.mask) == ("closed-form", 100, EllipseMask())

    region = np.repeat(np.repeat(EllipseMask().grid(64, 64), 4, 0), 4, 1)
    restored = anonymizer.deanonymize(result.image, KEY, result.mask, result.nonce)
    wrong = anonymizer.deanonymize(result.image, KEY.with_bit_flipped(3), result.mask, result.nonce)
    # The closed-form autoencoder is a 4x4 average: compare against what it can represent.
    ref = to_uint8(closed_form.decode(closed_form.encode(to_tensor([face], 256))))[0]
    restored_psnr = psnr(restored, ref, region)
    # Measured 61.8 dB at T = 100 with the default fixed-point:2 (29.2 dB with 0.1's DDIM).
    assert restored_psnr > 45
    assert psnr(result.image, ref, region) < restored_psnr - 30  # measured 9.2 dB
    assert psnr(wrong, ref, region) < restored_psnr - 30  # measured 9.2 dB
    # Outside the face: exactly what the autoencoder makes of the original (latents are equal).
    assert np.array_equal(result.image[~region], ref[~region])


def test_nonces_differ_per_image_but_not_in_paper_mode(closed_form, face):
    fresh = Anonymizer(closed_form, steps=10).anonymize_batch([face, face], KEY)
    assert fresh[0].nonce != fresh[1].nonce
    assert not np.array_equal(fresh[0].image, fresh[1].image)
    paper = Anonymizer(closed_form, steps=10, paper_mode=True).anonymize_batch([face, face], KEY)
    assert paper[0].nonce is None
    assert np.array_equal(paper[0].image, paper[1].image)


def test_api_rejects_wrong_size_and_steps(closed_form, face):
    with pytest.raises(ImageError, match="256x256"):
        Anonymizer(closed_form).anonymize(face[:128], KEY)
    with pytest.raises(ValueError):
        Anonymizer(closed_form, steps=0)


def test_tiny_backbone_runs_the_method(tiny, face):
    anonymizer = Anonymizer(tiny, steps=5)
    result = anonymizer.anonymize(face, KEY)
    again = anonymizer.deanonymize(result.image, KEY, result.mask, result.nonce)
    assert result.image.shape == again.shape == (256, 256, 3)
    assert not np.array_equal(result.image, face)
