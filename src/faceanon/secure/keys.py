"""Secret keys, their text format, passphrase keys, key -> sign vector (METHOD §4, §8).

Pure: no I/O but the two small key-file helpers at the end, no torch, no global RNG.

Key text format (``FAK1``): the key bytes followed by a 4-byte checksum, base32, in groups of
four letters: ``FAK1-XXXX-XXXX-...``. Any typo is detected (the checksum fails) instead of
silently producing a different face.

Passphrase keys (``FAP1``): the file holds a random salt and scrypt parameters, not the key; the
key is ``scrypt(passphrase, salt)``. There is deliberately no passphrase check value in the file:
a wrong passphrase gives another realistic face, like a wrong key, so the file gives an attacker
no way to test guesses offline.

Sign vectors: ``r = 2b - 1`` with the bits ``b`` read from SHAKE-256 over a length-prefixed
encoding of (domain, key, nonce, face index, shape). See :func:`sign_vector` for the exact bytes;
the result is identical on every platform, library version and device.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceanon.errors import KeyFileError
from faceanon.limits import MAX_SCRYPT_BYTES, MAX_SCRYPT_P

KEY_BITS = (128, 256)
DEFAULT_KEY_BITS = 128
NONCE_BYTES = 16

_RAW_TAG = "FAK1"
_PASS_TAG = "FAP1"
_CHECK_BYTES = 4
_SCRYPT_LOG2N = 17  # 2^17 * 128 * r bytes = 128 MiB with r = 8
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16


def _check(domain: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(domain + payload).digest()[:_CHECK_BYTES]


def _b32(data: bytes) -> str:
    text = base64.b32encode(data).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def _unb32(text: str) -> bytes:
    # Lenient on what people mistype: case, dashes, spaces, 0/O and 1/I (not in base32's alphabet).
    cleaned = "".join(text.split()).replace("-", "").upper().replace("0", "O").replace("1", "I")
    cleaned += "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(cleaned)
    except ValueError as exc:
        raise ValueError("not valid base32") from exc


@dataclass(frozen=True, repr=False)
class SecretKey:
    """A 128- or 256-bit secret. ``repr`` never shows the bits."""

    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) * 8 not in KEY_BITS:
            raise KeyFileError(f"a key must be 128 or 256 bits, got {len(self.material) * 8} bits")

    def __repr__(self) -> str:
        return f"SecretKey({self.bits} bits)"

    @property
    def bits(self) -> int:
        return len(self.material) * 8

    @classmethod
    def generate(cls, bits: int = DEFAULT_KEY_BITS) -> SecretKey:
        """A fresh key from the operating system's CSPRNG."""
        if bits not in KEY_BITS:
            raise KeyFileError(f"key size must be one of {KEY_BITS} bits, got {bits}")
        return cls(secrets.token_bytes(bits // 8))

    def to_text(self) -> str:
        """``FAK1-...``: key bytes + 4-byte checksum, base32 in groups of four."""
        return f"{_RAW_TAG}-" + _b32(self.material + _check(b"faceanon-key-v1", self.material))

    @classmethod
    def from_text(cls, text: str) -> SecretKey:
        """Parse :meth:`to_text` output; raise KeyFileError on any typo or wrong length."""
        text = text.strip()
        if not text.upper().startswith(_RAW_TAG):
            raise KeyFileError(f"not a faceanon key (expected it to start with {_RAW_TAG}-)")
        try:
            raw = _unb32(text[len(_RAW_TAG) :])
        except ValueError:
            raise KeyFileError("key text has characters outside base32 (A-Z, 2-7)") from None
        material, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
        if len(material) * 8 not in KEY_BITS:
            raise KeyFileError(
                f"key has the wrong length ({len(material) * 8} bits; expected 128 or 256): "
                "characters are missing or extra"
            )
        if check != _check(b"faceanon-key-v1", material):
            raise KeyFileError("key checksum does not match: the key was mistyped or damaged")
        return cls(material)

    def with_bit_flipped(self, bit: int) -> SecretKey:
        """The same key with one bit inverted (for wrong-key experiments)."""
        if not 0 <= bit < self.bits:
            raise ValueError(f"bit index {bit} out of range for a {self.bits}-bit key")
        data = bytearray(self.material)
        data[bit // 8] ^= 0x80 >> (bit % 8)
        return SecretKey(bytes(data))


@dataclass(frozen=True)
class PassphraseSpec:
    """What a passphrase key file stores: scrypt parameters and a random salt (no secret)."""

    salt: bytes
    bits: int = DEFAULT_KEY_BITS
    log2_n: int = _SCRYPT_LOG2N
    r: int = _SCRYPT_R
    p: int = _SCRYPT_P

    @classmethod
    def new(cls, bits: int = DEFAULT_KEY_BITS, log2_n: int = _SCRYPT_LOG2N) -> PassphraseSpec:
        return cls(salt=secrets.token_bytes(_SALT_BYTES), bits=bits, log2_n=log2_n)

    def _fields(self) -> str:
        return f"{_PASS_TAG}:scrypt:{self.log2_n}:{self.r}:{self.p}:{self.bits}"

    def to_text(self) -> str:
        payload = self._fields().encode() + self.salt
        return f"{self._fields()}:{_b32(self.salt + _check(b'faceanon-pass-v1', payload))}"

    @classmethod
    def from_text(cls, text: str) -> PassphraseSpec:
        parts = text.strip().split(":")
        if len(parts) != 7 or parts[0].upper() != _PASS_TAG or parts[1] != "scrypt":
            raise KeyFileError(
                f"malformed passphrase key line (expected {_PASS_TAG}:scrypt:N:R:P:BITS:SALT)"
            )
        try:
            log2_n, r, p, bits = (int(x) for x in parts[2:6])
            raw = _unb32(parts[6])
        except ValueError:
            raise KeyFileError("malformed passphrase key line: bad number or salt") from None
        salt, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
        spec = cls(salt=salt, bits=bits, log2_n=log2_n, r=r, p=p)
        if check != _check(b"faceanon-pass-v1", spec._fields().encode() + salt):
            raise KeyFileError("passphrase key line checksum does not match: it was damaged")
        if bits not in KEY_BITS or not 10 <= log2_n <= 30 or not 1 <= r <= 64:
            raise KeyFileError("passphrase key line has out-of-range parameters")
        if spec.memory > MAX_SCRYPT_BYTES or not 1 <= p <= MAX_SCRYPT_P:
            raise KeyFileError(
                f"passphrase key asks for {spec.memory >> 20} MiB x {p} passes of scrypt; "
                f"faceanon allows at most {MAX_SCRYPT_BYTES >> 20} MiB and {MAX_SCRYPT_P} passes"
            )
        return spec

    @property
    def memory(self) -> int:
        """Bytes scrypt needs: 128 * r * N."""
        return 128 * self.r << self.log2_n

    def derive(self, passphrase: str) -> SecretKey:
        """scrypt (memory-hard) over the NFKC-normalised UTF-8 passphrase."""
        if not passphrase:
            raise KeyFileError("empty passphrase")
        secret = unicodedata.normalize("NFKC", passphrase).encode("utf-8")
        try:
            key = hashlib.scrypt(
                secret,
                salt=self.salt,
                n=1 << self.log2_n,
                r=self.r,
                p=self.p,
                maxmem=2 * self.memory + (1 << 20),
                dklen=self.bits // 8,
            )
        except (MemoryError, ValueError) as exc:
            raise KeyFileError(
                f"scrypt failed ({type(exc).__name__}: not enough memory?)"
            ) from None
        return SecretKey(key)


def new_nonce() -> bytes:
    """A fresh random per-image nonce (16 bytes)."""
    return secrets.token_bytes(NONCE_BYTES)


def keyed_stream(domain: bytes, key: SecretKey, fields: Sequence[bytes], length: int) -> bytes:
    """``length`` bytes of SHAKE-256 over (domain, key, *fields), each field as a 4-byte
    big-endian length then its bytes: the one derivation behind sign vectors, the mixing plan
    and the sealed polygon's keystream."""
    message = b"".join(struct.pack(">I", len(f)) + f for f in (domain, key.material, *fields))
    return hashlib.shake_256(message).digest(length)


def nonce_fields(nonce: bytes | None, face_index: int) -> tuple[bytes, bytes]:
    """The (mode, face index) fields: ``b"paper"`` and 0 in paper mode (one pattern per key),
    else ``b"nonce" + nonce`` and the face index."""
    if nonce is None:
        return b"paper", struct.pack(">I", 0)
    return b"nonce" + nonce, struct.pack(">I", face_index)


def sign_vector(
    key: SecretKey, shape: tuple[int, ...], nonce: bytes | None, face_index: int = 0
) -> np.ndarray:
    """The key-derived sign pattern ``r`` in {-1, +1} of the given shape, as int8.

    ``nonce=None`` is the paper's mode: one ``r`` for every image and face under a key (the
    face index is ignored). Otherwise ``r`` depends on (key, nonce, face index), so a known
    (original, anonymized) pair reveals nothing about other images.

    Bytes hashed with SHAKE-256, each field as a 4-byte big-endian length then the bytes:
    ``"faceanon/sign-vector/v1"``, key, ``b"paper"`` or ``b"nonce" + nonce``, the face index as
    4-byte big-endian, the shape as ASCII ``"c,h,w"``. The output bits, most significant first,
    give ``b``; ``r = 2b - 1``.
    """
    if any(s <= 0 for s in shape):
        raise ValueError(f"invalid shape {shape}")
    if nonce is not None and len(nonce) == 0:
        raise ValueError("an empty nonce is not allowed; use nonce=None for paper mode")
    count = int(np.prod(shape))
    fields = (*nonce_fields(nonce, face_index), ",".join(str(s) for s in shape).encode("ascii"))
    stream = keyed_stream(b"faceanon/sign-vector/v1", key, fields, (count + 7) // 8)
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), bitorder="big")[:count]
    return (bits.astype(np.int8) * 2 - 1).reshape(shape)


# --- key files -------------------------------------------------------------------------------

_MAX_KEY_FILE = 4096


def secret_key_comment(bits: int) -> str:
    return (
        f"faceanon secret key ({bits}-bit). Anyone holding it can undo the anonymization:"
        " keep it private."
    )


def key_file_content(text: str, comment: str) -> str:
    """A key file: one comment line, then the key line."""
    return f"# {comment}\n{text}\n"


def write_key_file(path: Path, text: str, comment: str) -> None:
    """Create ``path`` holding ``text``, readable only by the owner; never overwrites.

    Written to a temporary file in the same folder, flushed to disk, then given its name only
    if no file has it (:func:`faceanon.media.io.publish_exclusive`).
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".faceanon-key-")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {_why(exc, path.parent)}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key_file_content(text, comment))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        from faceanon.media.io import publish_exclusive

        publish_exclusive(tmp, path)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {_why(exc, path.parent)}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _why(exc: OSError, folder: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"folder {folder} does not exist" if not folder.is_dir() else "cannot create it"
    if isinstance(exc, PermissionError):
        return f"no permission to write in {folder}"
    return exc.strerror or type(exc).__name__


def _key_text(raw: bytes) -> str:
    """A key file's text: ASCII, also as editors save it (a UTF-8 byte-order mark, or UTF-16
    with its mark, as Windows Notepad's "Unicode"); anything else is UnicodeDecodeError."""
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raw = raw.decode("utf-16").encode("utf-8")
    return raw.removeprefix(codecs.BOM_UTF8).decode("ascii")


def read_key_file(
    path: Path, passphrase: Callable[[], str] | None = None, data: bytes | None = None
) -> SecretKey:
    """Read a ``FAK1`` key file, or a ``FAP1`` passphrase file (then ``passphrase()`` is asked).
    With ``data`` (an upload) the file is those bytes and ``path`` only names it in messages."""
    try:
        if (len(data) if data is not None else path.stat().st_size) > _MAX_KEY_FILE:
            raise KeyFileError(f"{path}: too large to be a faceanon key file")
        raw = path.read_bytes() if data is None else data
        lines = _key_text(raw).splitlines()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a key file") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a faceanon key file (not text)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    content = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(content) != 1:
        raise KeyFileError(f"{path}: expected exactly one key line, found {len(content)}")
    line = content[0]
    try:
        if line.upper().startswith(_PASS_TAG):
            spec = PassphraseSpec.from_text(line)
            if passphrase is None:
                raise KeyFileError("this is a passphrase key file but no passphrase was given")
            return spec.derive(passphrase())
        return SecretKey.from_text(line)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
