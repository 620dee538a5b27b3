"""Make a test video from public-domain material: the astronaut photo (NASA, skimage's
``data.astronaut()``) moving, zooming and turning over a grey background, optionally several
copies, with a 440 Hz tone as the sound track.

    python scripts/make_clip.py clip.mp4 --frames 50 --size 640x360 --fps 25
    python scripts/make_clip.py clip720.mp4 --frames 250 --size 1280x720 --copies 2
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np


def placement(
    i: int, frames: int, width: int, height: int, copies: int = 1, turn: float = 12.0
) -> list[tuple[int, int, int, float]]:
    """Where each copy of the photo is in frame ``i``: (x, y, side, angle in degrees)."""
    phase = i / max(frames - 1, 1)
    out = []
    for c in range(copies):
        side = int(height * (0.8 + 0.25 * phase) / max(1, copies**0.5))
        angle = turn * float(np.sin(2 * np.pi * phase + c))
        x = int((width - side) * (0.1 + 0.6 * phase) / copies + c * width / copies)
        y = int((height - side) * 0.3)
        out.append((x, y, side, angle))
    return out


def frame_at(
    photo: np.ndarray,
    i: int,
    frames: int,
    width: int,
    height: int,
    copies: int = 1,
    turn: float = 12.0,
) -> np.ndarray:
    """Frame ``i``: each copy of the photo slides right, grows and turns by up to ``turn``."""
    import cv2

    canvas = np.full((height, width, 3), 190, np.uint8)
    for x, y, side, angle in placement(i, frames, width, height, copies, turn):
        small = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        rotation = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        small = cv2.warpAffine(small, rotation, (side, side), borderValue=(190, 190, 190))
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + side, width), min(y + side, height)
        if x1 > x0 and y1 > y0:
            canvas[y0:y1, x0:x1] = small[y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def make_clip(
    path: Path,
    frames: int = 50,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    copies: int = 1,
    audio: bool = True,
    codec: str = "libx264",
    rotation: int = 0,
    turn: float = 12.0,
) -> Path:
    """Write the clip (H.264 + AAC by default; the container from ``path``'s suffix).
    ``rotation`` (90 or 270): stored turned, with the display rotation that turns it back, as
    a phone held upright records."""
    import av
    from skimage import data

    photo = data.astronaut()
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        turned = rotation % 180 == 90
        video.width, video.height = (height, width) if turned else (width, height)
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=48000, layout="mono") if audio else None
        for i in range(frames):
            image = frame_at(photo, i, frames, width, height, copies, turn)
            image = np.ascontiguousarray(np.rot90(image, -rotation // 90)) if rotation else image
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            rate = 48000
            total = int(rate * Fraction(frames, fps))
            t = np.arange(total) / rate
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = rate, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--turn", type=float, default=12.0, help="largest roll, degrees")
    parser.add_argument("--no-audio", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    make_clip(
        args.output,
        args.frames,
        (width, height),
        args.fps,
        args.copies,
        not args.no_audio,
        turn=args.turn,
    )
    print(args.output)


if __name__ == "__main__":
    main()
