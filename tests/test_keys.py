from __future__ import annotations

import hashlib
import os
import stat
import struct

import numpy as np
import pytest

from faceanon.errors import KeyFileError
from faceanon.secure.keys import (
    PassphraseSpec,
    SecretKey,
    read_key_file,
    sign_vector,
    write_key_file,
)

KEY = SecretKey(bytes(range(16)))
NONCE = bytes(range(100, 116))
SHAPE = (3, 64, 64)


def first_bits_hex(r: np.ndarray, n: int = 64) -> str:
    return np.packbits((r.ravel()[:n] > 0).astype(np.uint8)).tobytes().hex()


# Published test vectors: key 000102...0f (and 00..1f), latent shape 3x64x64.
# Any implementation of the derivation documented in keys.sign_vector must reproduce them.
@pytest.mark.parametrize(
    ("key", "nonce", "index", "expected"),
    [
        (KEY, None, 0, "46fe7a807bff8bb8"),
        (KEY, NONCE, 0, "f2033103b45fc8b0"),
        (KEY, NONCE, 1, "26807425c21258ae"),
        (SecretKey(bytes(range(32))), None, 0, "4608ffda8059ea3b"),
    ],
)
def test_sign_vector_test_vectors(key, nonce, index, expected):
    assert first_bits_hex(sign_vector(key, SHAPE, nonce, index)) == expected


def test_sign_vector_follows_documented_bytes():
    def field(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    message = b"".join(
        field(x)
        for x in (
            b"faceanon/sign-vector/v1",
            KEY.material,
            b"nonce" + NONCE,
            struct.pack(">I", 3),
            b"3,64,64",
        )
    )
    stream = hashlib.shake_256(message).digest(3 * 64 * 64 // 8)
    expected = np.unpackbits(np.frombuffer(stream, np.uint8)).astype(np.int8) * 2 - 1
    assert np.array_equal(sign_vector(KEY, SHAPE, NONCE, 3).ravel(), expected)


def test_sign_vector_values_shape_and_involution():
    r = sign_vector(KEY, SHAPE, NONCE)
    assert r.shape == SHAPE and r.dtype == np.int8
    assert set(np.unique(r)) == {-1, 1}
    assert np.array_equal(r * r, np.ones(SHAPE, np.int8))
    assert abs(float((r > 0).mean()) - 0.5) < 0.02


def test_one_bit_key_change_flips_half_of_r():
    r = sign_vector(KEY, SHAPE, None)
    fractions = [
        float((sign_vector(KEY.with_bit_flipped(bit), SHAPE, None) != r).mean())
        for bit in range(KEY.bits)
    ]
    assert abs(np.mean(fractions) - 0.5) < 0.01
    assert all(abs(f - 0.5) < 0.05 for f in fractions)


def test_nonce_and_face_index_change_r_but_paper_mode_does_not():
    base = sign_vector(KEY, SHAPE, NONCE, 0)
    other_nonce = sign_vector(KEY, SHAPE, bytes(16), 0)
    other_face = sign_vector(KEY, SHAPE, NONCE, 1)
    assert abs(float((base != other_nonce).mean()) - 0.5) < 0.02
    assert abs(float((base != other_face).mean()) - 0.5) < 0.02
    # Paper mode: the same r for every image and face under a key.
    assert np.array_equal(sign_vector(KEY, SHAPE, None, 0), sign_vector(KEY, SHAPE, None, 7))
    assert not np.array_equal(sign_vector(KEY, SHAPE, None), base)


def test_sign_vector_rejects_empty_nonce_and_bad_shape():
    with pytest.raises(ValueError):
        sign_vector(KEY, SHAPE, b"")
    with pytest.raises(ValueError):
        sign_vector(KEY, (3, 0, 4), None)


def test_generate_uses_fresh_randomness_and_sizes():
    a, b = SecretKey.generate(), SecretKey.generate()
    assert a.bits == 128 and a != b
    assert SecretKey.generate(256).bits == 256
    with pytest.raises(KeyFileError):
        SecretKey.generate(64)
    assert "00" not in repr(KEY) and repr(KEY) == "SecretKey(128 bits)"


@pytest.mark.parametrize("bits", [128, 256])
def test_key_text_round_trip(bits):
    key = SecretKey.generate(bits)
    text = key.to_text()
    assert text.startswith("FAK1-")
    assert SecretKey.from_text(text) == key
    assert SecretKey.from_text(text.lower().replace("-", " ")) == key


def test_key_text_known_value():
    assert KEY.to_text() == "FAK1-AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B5P4-NOVL"


def test_key_text_detects_every_single_character_typo():
    text = KEY.to_text()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    positions = [i for i, c in enumerate(text) if i >= 5 and c != "-"]
    for i in positions:
        wrong = alphabet[(alphabet.index(text[i]) + 1) % 32]
        typo = text[:i] + wrong + text[i + 1 :]
        with pytest.raises(KeyFileError):
            SecretKey.from_text(typo)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "not a faceanon key"),
        ("FAK1-AAAQ-EAYE-AUDA", "wrong length"),
        ("FAK1-AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B5P4-NOVL-AAAA", "wrong length"),
        ("FAK1-AA!Q-EAYE", "base32"),
    ],
)
def test_key_text_errors(text, message):
    with pytest.raises(KeyFileError, match=message):
        SecretKey.from_text(text)


def test_flip_bit():
    flipped = KEY.with_bit_flipped(0)
    assert flipped.material[0] == KEY.material[0] ^ 0x80
    assert flipped.with_bit_flipped(0) == KEY
    with pytest.raises(ValueError):
        KEY.with_bit_flipped(128)


def test_passphrase_spec_vector_and_round_trip():
    spec = PassphraseSpec(salt=bytes(16), log2_n=10)
    assert spec.to_text() == "FAP1:scrypt:10:8:1:128:AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAC-B52I"
    assert PassphraseSpec.from_text(spec.to_text()) == spec
    key = spec.derive("correct horse battery staple")
    assert key.material.hex() == "bb964cbe32bb5dc4d40f58a7a7251c73"
    assert spec.derive("correct horse battery stapler") != key
    # NFKC: a composed and a decomposed e-acute give the same key.
    assert spec.derive("caf\u00e9") == spec.derive("cafe\u0301")
    with pytest.raises(KeyFileError, match="empty"):
        spec.derive("")


def test_passphrase_spec_detects_damage():
    text = PassphraseSpec(salt=bytes(16), log2_n=10).to_text()
    with pytest.raises(KeyFileError, match="checksum"):
        PassphraseSpec.from_text(text.replace(":10:", ":11:"))
    with pytest.raises(KeyFileError, match="malformed"):
        PassphraseSpec.from_text("FAP1:scrypt:10")


def test_key_file_round_trip_and_permissions(tmp_path):
    path = tmp_path / "my.key"
    write_key_file(path, KEY.to_text(), "test key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_key_file(path) == KEY
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, SecretKey.generate().to_text(), "again")
    assert read_key_file(path) == KEY  # not overwritten
    assert [p.name for p in tmp_path.iterdir()] == ["my.key"]  # no temp files left


def test_passphrase_key_file(tmp_path):
    path = tmp_path / "pass.key"
    spec = PassphraseSpec.new(log2_n=10)
    write_key_file(path, spec.to_text(), "passphrase key")
    key = read_key_file(path, lambda: "open sesame")
    assert key == spec.derive("open sesame")
    assert read_key_file(path, lambda: "open sesame!") != key
    with pytest.raises(KeyFileError, match="no passphrase"):
        read_key_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "exactly one key line"),
        (b"\xff\xfe\x00binary", "not text"),
        (b"FAK1-AAAQ-EAYE-AUDA\n", "wrong length"),
        (b"FAK1-AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B5P4-NOVM\n", "mistyped"),
        (b"FAK1-AAAQ\nFAK1-AAAQ\n", "exactly one key line"),
        (b"A" * 5000, "too large"),
    ],
)
def test_key_file_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as info:
        read_key_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
