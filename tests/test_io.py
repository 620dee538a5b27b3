"""Image reading and writing: modes, metadata, refusals, atomic writes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanon.errors import ImageError
from faceanon.media.io import read_image, write_image


def _png_header_only(path, width, height):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_modes_become_rgb(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "grey.png")
    Image.new("RGBA", (8, 8), (200, 100, 50, 0)).save(tmp_path / "clear.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    grey = read_image(tmp_path / "grey.png").image
    assert grey.shape == (8, 8, 3) and (grey == 100).all()
    clear = read_image(tmp_path / "clear.png").image
    assert (clear == 0).all()  # fully transparent composites to black
    deep = read_image(tmp_path / "deep.png").image
    assert deep.dtype == np.uint8 and (deep == 255).all()
    cmyk = read_image(tmp_path / "cmyk.jpg").image
    assert cmyk.shape == (8, 8, 3) and cmyk.min() > 240


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").image.shape == (4, 2, 3)


@pytest.mark.parametrize("kind", ["animated", "huge", "directory"])
def test_refusals(tmp_path, kind):
    path = tmp_path / "input.gif"
    if kind == "animated":
        frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        problem = r"animated image \(2 frames\)"
    elif kind == "huge":
        path = tmp_path / "huge.png"
        _png_header_only(path, 20000, 20000)
        problem = "too large"
    else:
        path = tmp_path / "folder"
        path.mkdir()
        problem = "is a directory"
    with pytest.raises(ImageError, match=problem) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_write_png_and_jpeg_with_metadata(tmp_path):
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    write_image(tmp_path / "a.png", image, '{"faceanon":1}', overwrite=False)
    back = read_image(tmp_path / "a.png")
    assert np.array_equal(back.image, image) and back.faceanon == '{"faceanon":1}'
    write_image(tmp_path / "b.jpg", image, '{"faceanon":1}', overwrite=False)
    assert read_image(tmp_path / "b.jpg").faceanon == '{"faceanon":1}'
    assert read_image(tmp_path / "b.jpg").image.shape == (8, 8, 3)
    write_image(tmp_path / "c.webp", image, '{"faceanon":1}', overwrite=False)
    webp = read_image(tmp_path / "c.webp")
    assert webp.faceanon == '{"faceanon":1}' and webp.image.shape == (8, 8, 3) and webp.lossy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "c.webp"]


@pytest.mark.parametrize("with_exif", [False, True])
def test_webp_chunks_are_found_and_a_hostile_file_is_read_within_its_bytes(tmp_path, with_exif):
    """faceanon's WebP chunks (media.webp) after the image, in the simple layout Pillow writes
    without EXIF (given a VP8X header) and the extended one it writes with: Pillow and FFmpeg
    still decode the picture, the reader finds the chunks from the bytes or the file, and a
    chunk or RIFF size that claims more than the file ends the walk instead of reading past
    it or raising."""
    from faceanon.media import webp
    from faceanon.media.io import encode_image

    exif = None
    if with_exif:
        tags = Image.Exif()
        tags[0x010F] = "a camera maker"
        exif = tags.tobytes()
    y, x = np.mgrid[:30, :41]
    image = np.stack([x * 6, y * 8, x + y], axis=-1).astype(np.uint8)
    data = encode_image(image, '{"faceanon":1}', "webp", exif=exif, latents=lambda px: b"abc")
    assert data[12:16] == b"VP8X" and data[4:8] == (len(data) - 8).to_bytes(4, "little")
    (tmp_path / "a.webp").write_bytes(data)
    for picture in (read_image(tmp_path / "a.webp"), read_image(Path("upload"), data)):
        assert picture.faceanon == '{"faceanon":1}' and picture.latents == (("WebP", b"abc"),)
        assert picture.image.shape == (30, 41, 3)
        assert np.abs(picture.image - image.astype(int)).mean() < 3
    av = pytest.importorskip("av")
    with av.open(str(tmp_path / "a.webp")) as container:
        assert next(container.decode(video=0)).width == 41
    wanted = (webp.METADATA, webp.LATENTS)
    assert webp.read_chunks(data[:-4], wanted) == {webp.METADATA: b'{"faceanon":1}'}
    huge = data[:-12] + b"FALT" + (2**32 - 1).to_bytes(4, "little") + b"abc\0"
    assert webp.LATENTS not in webp.read_chunks(huge, wanted)
    short = data[:4] + (20).to_bytes(4, "little") + data[8:]  # RIFF size: the image alone
    assert webp.read_chunks(short, wanted) == {}
    assert webp.read_chunks(b"RIFF\xff\xff\xff\xffWEBP", wanted) == {}
    assert webp.read_chunks(b"\x89PNG" + data[4:], wanted) == {}
    stripped = webp.remove_chunks(data, [webp.LATENTS])
    assert webp.read_chunks(stripped, wanted) == {webp.METADATA: b'{"faceanon":1}'}
    assert read_image(Path("s"), stripped).latents == ()


def test_write_refuses_existing_and_unknown_formats(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "keep.png").write_bytes(b"precious")
    with pytest.raises(ImageError, match="already exists"):
        write_image(tmp_path / "keep.png", image, None, overwrite=False)
    assert (tmp_path / "keep.png").read_bytes() == b"precious"
    with pytest.raises(ImageError, match=r"\.png"):
        write_image(tmp_path / "x.gif", image, None, overwrite=False)
    write_image(tmp_path / "keep.png", image, None, overwrite=True)
    assert np.array_equal(read_image(tmp_path / "keep.png").image, image)


def test_is_grey_is_the_channel_spread_everywhere_not_only_on_sampled_rows() -> None:
    from faceanon.media.io import GREY_SPREAD, is_grey

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        base = rng.integers(0, 256, (h, w, 1)).astype(np.int16)
        tint = rng.integers(-6, 7, (h, w, 3)) * (rng.random((h, w, 3)) < 0.02)
        image = np.clip(base + tint, 0, 255).astype(np.uint8)
        spread = image.max(axis=-1).astype(int) - image.min(axis=-1)
        assert is_grey(image) == bool(spread.max() <= GREY_SPREAD)
    grey = np.full((64, 64, 3), 120, np.uint8)
    assert is_grey(grey)
    grey[33, 40, 2] = 120 + GREY_SPREAD + 1  # one pixel, on a row the quick pass skips
    assert not is_grey(grey)
