"""Videos (issue 13): clips made by scripts/make_clip.py from the public-domain astronaut."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_clip import make_clip

from faceanon.apps.cli import main

av = pytest.importorskip("av")
FRAMES = 14
FAST = ["--recall", "standard", "--upright-only"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", FRAMES, (480, 270))


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [bytes(p) for p in container.demux(audio=0) if p.dts is not None]


def _psnr(a, b, where) -> float:
    err = ((a.astype(np.float64) - b)[where] ** 2).mean()
    return float(10 * np.log10(255.0**2 / max(err, 1e-12)))


@pytest.fixture
def work(tmp_path, monkeypatch, clip):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    assert main(["keygen", "-o", "my.key"]) == 0
    return tmp_path


def test_blur_keeps_timing_size_and_sound(work, capsys):
    assert main(["anonymize", "clip.mp4", "--method", "blur", *FAST]) == 0
    out = capsys.readouterr().err
    assert "clip.mp4 -> clip_anonymized.mp4 (14 frames, 14 face-frames in 1 tracks" in out
    with av.open("clip.mp4") as a, av.open("clip_anonymized.mp4") as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.width, vb.height, vb.average_rate) == (va.width, va.height, va.average_rate)
        assert vb.codec_context.name == "h264" and abs(a.duration - b.duration) < 50_000
    assert _audio_packets("clip_anonymized.mp4") == _audio_packets("clip.mp4") != []
    original, blurred = _frames("clip.mp4"), _frames("clip_anonymized.mp4")
    assert len(blurred) == FRAMES
    for x, y in zip(original, blurred, strict=True):
        changed = np.abs(x.astype(int) - y).max(axis=-1) > 20
        assert 150 < changed.sum() < 0.1 * changed.size  # the face, and only the face
    assert (
        main(["anonymize", "clip.mp4", "--method", "blur", *FAST, "--no-audio", "-o", "quiet.mkv"])
        == 0
    )
    assert _audio_packets("quiet.mkv") == []


def test_keyflip_video_is_lossless_and_restores(work, capsys):
    fast = ["--backbone", "closed-form", "--steps", "50", *FAST]
    assert main(["anonymize", "clip.mp4", "-k", "my.key", "--lossless", *fast]) == 0
    with av.open("clip_anonymized.mkv") as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
        attachment = next(s for s in container.streams if s.type == "attachment")
        document = json.loads(bytes(attachment.data))
    assert document["frames"] == FRAMES and len(document["metadata"]) == FRAMES
    nonces = {json.loads(m)["faces"][0]["nonce"] for m in document["metadata"]}
    assert len(nonces) == 1  # one tracked person, one nonce: one anonymized identity
    # ...and one region in the crop (kept cells, in the clear), so the default mix transform is
    # the same in every frame (it depends on the masked cells), and nothing is sealed.
    regions = {json.loads(m)["faces"][0]["keep"] for m in document["metadata"]}
    assert len(regions) == 1
    assert all(
        set(base64.b64decode(json.loads(m)["sealed"]["data"])) == {0} for m in document["metadata"]
    )
    assert main(["deanonymize", "clip_anonymized.mkv", "-k", "my.key"]) == 0
    assert main(["deanonymize", "clip_anonymized.mkv", "-k", "my.key", "-o", "again.mkv"]) == 0
    original = _frames("clip.mp4")
    anonymized, restored = _frames("clip_anonymized.mkv"), _frames("clip_deanonymized.mkv")
    assert len(restored) == FRAMES and _audio_packets("clip_deanonymized.mkv") == _audio_packets(
        "clip.mp4"
    )
    for x, y, z in zip(original, anonymized, restored, strict=True):
        face = (x != y).any(axis=-1)
        assert face.sum() > 300
        assert _psnr(z, x, face) > _psnr(y, x, face) + 8
    # Lossless: away from the face the anonymized video is the decoded input, bit for bit.
    xs = np.nonzero((original[0] != anonymized[0]).any(axis=-1))[1]
    assert np.array_equal(anonymized[0][:, xs.max() + 20 :], original[0][:, xs.max() + 20 :])
    # Restoring twice gives the same video; a wrong key another face.
    assert all(np.array_equal(a, b) for a, b in zip(restored, _frames("again.mkv"), strict=True))
    assert main(["keygen", "-o", "other.key"]) == 0
    assert main(["deanonymize", "clip_anonymized.mkv", "-k", "other.key", "-o", "wrong.mkv"]) == 0
    x, y, z, w = original[5], anonymized[5], restored[5], _frames("wrong.mkv")[5]
    face = (x != y).any(axis=-1)
    assert _psnr(w, x, face) < _psnr(z, x, face) - 6


def test_tracking_fills_missed_detections(work, monkeypatch, capsys):
    from faceanon.faces import detect

    original_detect = detect.detect_turned
    frames: dict[bytes, int] = {}  # each frame's pixels -> its number

    def flaky(detector, image, turns=(0, 1, 3)):
        number = frames.setdefault(image.tobytes(), len(frames))
        if number in (4, 5, 6):  # every search of frames 4-6 misses the face
            return []
        return original_detect(detector, image, turns)

    monkeypatch.setattr(detect, "detect_turned", flaky)
    assert main(["anonymize", "clip.mp4", "--method", "solid", *FAST, "-o", "found.mp4"]) == 0
    # The search around the lost track finds the face again (the whole-frame search missed).
    assert "14 face-frames in 1 tracks, 3 found by the turned search" in capsys.readouterr().err
    from faceanon.faces import tracking

    frames.clear()
    monkeypatch.setattr(tracking, "RECOVER_ANGLES", ())  # without it, the gap is interpolated
    assert main(["anonymize", "clip.mp4", "--method", "solid", *FAST]) == 0
    out = capsys.readouterr().err
    assert "14 face-frames in 1 tracks, 3 filled between detections" in out
    for x, y in zip(_frames("clip.mp4"), _frames("clip_anonymized.mp4"), strict=True):
        assert (np.abs(x.astype(int) - y).max(axis=-1) > 40).sum() > 300  # no bare frame


def test_bad_videos_are_one_line_each(work, capsys):
    Path("text.mp4").write_text("not a video at all")
    data = Path("clip.mp4").read_bytes()
    Path("cut.mp4").write_bytes(data[: len(data) // 2])
    assert main(["anonymize", "text.mp4", "--method", "blur", *FAST]) == 1
    err = capsys.readouterr().err
    assert "error: text.mp4: not a video" in err and "Traceback" not in err
    assert main(["deanonymize", "clip.mp4", "-k", "my.key"]) == 1
    err = capsys.readouterr().err
    assert "clip.mp4: no faceanon metadata in this video" in err
    assert not Path("clip_deanonymized.mkv").exists()  # never a half-written output
    code = main(["anonymize", "cut.mp4", "--method", "blur", *FAST])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 0:  # what decodes is kept, and the break is said
        assert len(_frames("cut_anonymized.mp4")) < FRAMES
    # An existing output is never replaced without --overwrite.
    Path("clip_anonymized.mp4").write_bytes(b"mine")
    assert main(["anonymize", "clip.mp4", "--method", "blur", *FAST]) == 1
    assert Path("clip_anonymized.mp4").read_bytes() == b"mine"
    assert not [p for p in Path().iterdir() if p.name.startswith(".")]  # no temporary left


def test_video_without_faces_is_not_written(work, capsys, tmp_path):
    import av as pyav

    with pyav.open("empty.mp4", "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = pyav.VideoFrame.from_ndarray(
                np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24"
            )
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    assert main(["anonymize", "empty.mp4", "--method", "blur", *FAST]) == 0
    assert "empty.mp4: no face found in 5 frames; nothing written" in capsys.readouterr().err
    assert not Path("empty_anonymized.mp4").exists()
    assert main(["anonymize", "empty.mp4", "--method", "blur", *FAST, "--write-faceless"]) == 0
    assert len(_frames("empty_anonymized.mp4")) == 5


def test_rotated_phone_video_keeps_its_rotation(work, tmp_path, capsys):
    make_clip(Path("phone.mp4"), 6, (480, 270), audio=False, rotation=90)
    # The frames are stored turned (the face lies sideways): the sideways search finds it.
    assert main(["anonymize", "phone.mp4", "--method", "solid", "--recall", "standard"]) == 0
    assert "6 face-frames in 1 tracks" in capsys.readouterr().err
    with av.open("phone_anonymized.mp4") as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (270, 480)


def test_keyflip_mp4_carries_exact_faces_and_restores_as_ffv1_does(work, monkeypatch, capsys):
    """keyflip writes H.264 by default, in the input's container (here MP4, the metadata in
    faceanon's box after the movie; -o NAME.mkv: a Matroska attachment) with each face-frame's
    exact latent (from the frames as they decode): restored as well as from lossless FFV1.
    Without that data the restore says so once and works from the pixels, less exactly. The
    restore writes H.264 into an .mp4 name, FFV1 into an .mkv one."""
    from faceanon.media import codec, video

    fast = ["--backbone", "closed-form", "--steps", "50", *FAST]
    psnr = {}
    for name, flags in (
        ("ffv1.mkv", ["--lossless"]),
        ("clip_anonymized.mp4", []),
        ("h264.mkv", []),
        ("bare.mp4", []),
    ):
        if name == "bare.mp4":  # as a file whose exact face data was lost
            monkeypatch.setattr(video, "exact_data", lambda tmp, exact: [None] * len(exact))
        out = [] if name == "clip_anonymized.mp4" else ["-o", name]  # the default name
        assert main(["anonymize", "clip.mp4", "-k", "my.key", *fast, *flags, *out]) == 0
        if name == "h264.mkv":  # the same data in an attachment (read back below)
            continue
        assert main(["deanonymize", name, "-k", "my.key", "-o", f"back-{name}.mkv"]) == 0
        x, y, z = _frames("clip.mp4")[3], _frames(name)[3], _frames(f"back-{name}.mkv")[3]
        face = np.abs(x.astype(int) - y).max(axis=-1) > 40
        psnr[name] = _psnr(z, x, face)
    err = capsys.readouterr().err
    for name, codec_name in (("clip_anonymized.mp4", "h264"), ("h264.mkv", "h264")):
        with av.open(name) as container:
            assert container.streams.video[0].codec_context.name == codec_name
            assert [s.type for s in container.streams] == ["video", "audio"] + (
                ["attachment"] if name.endswith(".mkv") else []
            )
    assert codec.read_box(Path("clip_anonymized.mp4")) is not None
    for name in ("clip_anonymized.mp4", "h264.mkv"):
        with av.open(name) as container:
            metadata, exact = codec.read_document(Path(name), container)
        assert len(metadata) == len(exact) == FRAMES and all(exact)
    assert err.count("no exact face data in this lossy file") == 1 and "bare.mp4 frame" in err
    assert psnr["clip_anonymized.mp4"] > psnr["ffv1.mkv"] - 0.5, psnr
    assert psnr["bare.mp4"] < psnr["clip_anonymized.mp4"] - 2, psnr
    # The restore of an MP4 is an MP4 (H.264), and re-encoding it costs little.
    assert main(["deanonymize", "clip_anonymized.mp4", "-k", "my.key"]) == 0
    with av.open("clip_deanonymized.mp4") as container:
        assert container.streams.video[0].codec_context.name == "h264"
    x, z = _frames("clip.mp4")[3], _frames("clip_deanonymized.mp4")[3]
    face = np.abs(x.astype(int) - _frames("clip_anonymized.mp4")[3]).max(axis=-1) > 40
    assert _psnr(z, x, face) > psnr["clip_anonymized.mp4"] - 1
    assert (
        main(["deanonymize", "clip_anonymized.mp4", "-k", "my.key", "--crf", "40", "-o", "low.mp4"])
        == 0
    )
    assert Path("low.mp4").stat().st_size < Path("clip_deanonymized.mp4").stat().st_size / 2
    # A damaged box is one line; a copy without it has no metadata (one line too).
    data = Path("clip_anonymized.mp4").read_bytes()
    box = data.rindex(codec.BOX_UUID)
    Path("damaged.mp4").write_bytes(data[: box + 16] + b"{not json" + data[box + 25 :])
    Path("cut.mp4").write_bytes(data[: box - 8])
    capsys.readouterr()
    damaged = (("damaged.mp4", "faceanon metadata is damaged"), ("cut.mp4", "no faceanon"))
    for name, problem in damaged:
        assert main(["deanonymize", name, "-k", "my.key"]) == 1
        err = capsys.readouterr().err
        assert f"{name}: {problem}" in err and "Traceback" not in err, err
        assert not Path(name.replace(".mp4", "_deanonymized.mp4")).exists()


def test_a_grey_video_stays_grey_and_its_lossless_file_restores(work, monkeypatch, capsys):
    """A black-and-white video's faces stay grey, and even its lossless FFV1 file carries the
    exact latents of the coloured faces, which the restore starts from."""
    from faceanon.media.io import is_grey

    with av.open("clip.mp4") as source, av.open("grey.mkv", "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 270, "bgr0"
        for i, frame in enumerate(source.decode(video=0)):
            if i == 4:
                break
            grey = np.repeat(frame.to_ndarray(format="gray")[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    fast = ["--backbone", "closed-form", "--steps", "50", "--lossless", *FAST]
    assert main(["anonymize", "grey.mkv", "-k", "my.key", *fast]) == 0
    assert main(["deanonymize", "grey_anonymized.mkv", "-k", "my.key"]) == 0
    assert "exact face data" not in capsys.readouterr().err
    original, anonymized = _frames("grey.mkv"), _frames("grey_anonymized.mkv")
    restored = _frames("grey_deanonymized.mkv")
    assert all(is_grey(f) for f in anonymized + restored)
    for x, y, z in zip(original, anonymized, restored, strict=True):
        face = np.abs(x.astype(int) - y).max(axis=-1) > 40
        assert face.sum() > 300 and _psnr(z, x, face) > _psnr(y, x, face) + 8
    # The document has a size limit its reader enforces: the writer says so in one line and
    # leaves nothing behind rather than write a video it could not restore.
    from faceanon.media import codec

    monkeypatch.setattr(codec, "MAX_DOCUMENT_BYTES", 5000)
    before = sorted(p.name for p in Path().iterdir())
    assert main(["anonymize", "grey.mkv", "-k", "my.key", *fast, "-o", "big.mkv"]) == 1
    err = capsys.readouterr().err
    assert "big.mkv: the restore data would take" in err and "Traceback" not in err
    assert sorted(p.name for p in Path().iterdir()) == before


def test_colours_of_a_bt709_video_are_kept(work):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = (200, 60, 30)
    with av.open("c709.mp4", "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = 1  # limited
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        for p in stream.encode(frame):
            out.mux(p)
        for p in stream.encode():
            out.mux(p)
    before = _frames("c709.mp4")[0][32, 32].astype(int)
    assert main(["anonymize", "c709.mp4", "--method", "blur", "--write-faceless"]) == 0
    with av.open("c709_anonymized.mp4") as container:
        decoded = next(container.decode(video=0))
        assert decoded.colorspace == 1 and decoded.color_range == 1
        after = decoded.to_ndarray(format="rgb24")[32, 32].astype(int)
    assert np.abs(after - before).max() <= 3  # BT.601 re-encoding would move red by ~12


def _flat_video(path, pts, pix_fmt="yuv420p"):
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        stream.time_base = Fraction(1, 1000)
        for t in pts:
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)


def _pts(path) -> list[int]:
    with av.open(str(path)) as container:
        return [f.pts for f in container.decode(video=0)]


def test_variable_frame_rate_10_bit_and_sound_only_inputs(work, capsys):
    _flat_video("vfr.mkv", (0, 40, 200, 240, 900))  # gaps: a variable frame rate
    assert main(["anonymize", "vfr.mkv", "--method", "blur", "--write-faceless"]) == 0
    assert _pts("vfr_anonymized.mkv") == _pts("vfr.mkv")  # every frame's time kept
    _flat_video("deep.mkv", (0, 40, 80), "yuv420p10le")
    assert main(["anonymize", "deep.mkv", "--method", "blur", "--write-faceless"]) == 0
    assert "deep.mkv: yuv420p10le input is written with 8 bits" in capsys.readouterr().err
    with av.open("sound.mp4", "w") as out:
        stream = out.add_stream("aac", rate=48000, layout="mono")
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        chunk.sample_rate, chunk.pts = 48000, 0
        for p in [*stream.encode(chunk), *stream.encode()]:
            out.mux(p)
    assert main(["anonymize", "sound.mp4", "--method", "blur"]) == 1
    assert "error: sound.mp4: no video stream" in capsys.readouterr().err


def test_a_folder_of_photos_and_videos(work, capsys):
    from PIL import Image
    from skimage import data

    Path("in").mkdir()
    Path("in/clip.mp4").write_bytes(Path("clip.mp4").read_bytes())
    Image.fromarray(data.astronaut()).save("in/photo.png")
    assert main(["anonymize", "in", "--method", "blur", *FAST, "-o", "out"]) == 0
    err = capsys.readouterr().err
    assert (
        "anonymized videos: files 1, written 1" in err and "anonymized: files 1, written 1" in err
    )
    assert Path("out/clip_anonymized.mp4").is_file() and Path("out/photo_anonymized.png").is_file()


def test_the_whole_search_runs_every_hold_plus_one_frames_and_when_a_track_is_lost(
    work, monkeypatch, capsys
):
    """--recall high on video: the mirror-framed and enlarged views only every HOLD + 1
    frames (a face only they find is at most HOLD frames late, and the hold covers those),
    the photo as is between; and the whole search again on any frame where the quick one
    finds fewer faces than there are live tracks. No frame is left bare either way."""
    from faceanon.faces import tracking

    searched: list[bool] = []
    quick_misses = {"on": False}

    def counted(finder, frame, full=True):  # type: ignore[no-untyped-def]
        searched.append(full)
        if quick_misses["on"] and not full:
            return []
        return tracking.detect(finder, frame, full)

    monkeypatch.setattr("faceanon.media.video.detect", counted)
    upright = ["--upright-only", "--method", "solid"]
    assert main(["anonymize", "clip.mp4", *upright, "-o", "high.mp4"]) == 0
    assert searched == [i % (tracking.HOLD + 1) == 0 for i in range(FRAMES)]
    # The quick search misses every face: each frame after the first is searched again
    # whole, and still every frame is covered.
    searched.clear()
    quick_misses["on"] = True
    assert main(["anonymize", "clip.mp4", *upright, "-o", "lost.mp4"]) == 0
    assert searched.count(True) == FRAMES
    for x, y in zip(_frames("clip.mp4"), _frames("lost.mp4"), strict=True):
        assert (np.abs(x.astype(int) - y).max(axis=-1) > 40).sum() > 300  # no bare frame
    capsys.readouterr()


def test_crf_sets_the_h264_quality(work, capsys):
    """--crf: a higher CRF writes a smaller H.264 file; out of 0-51 is a usage error."""
    for crf in ("18", "30"):
        assert main(["anonymize", "clip.mp4", "--method", "blur", *FAST, "--crf", crf,
                     "-o", f"c{crf}.mp4"]) == 0  # fmt: skip
    assert Path("c30.mp4").stat().st_size < 0.8 * Path("c18.mp4").stat().st_size
    with pytest.raises(SystemExit):
        main(["anonymize", "clip.mp4", "--method", "blur", "--crf", "52"])
    assert "not an H.264 CRF from 0 to 51" in capsys.readouterr().err


CHROMIUM = os.environ.get("FACEANON_CHROMIUM", "/usr/bin/chromium")


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("FACEANON_REQUIRE_BROWSER"),
    reason=f"no Chromium at {CHROMIUM} (apt install chromium; .ci/run installs it)",
)
def test_a_keyflip_mp4_plays_in_a_real_browser(work):
    """The box faceanon adds after the movie does not stop a browser: Chromium decodes and
    plays every frame of a keyflip MP4 to its end."""
    from playwright.sync_api import sync_playwright

    from faceanon.media import codec

    fast = ["--backbone", "closed-form", "--steps", "4", *FAST]
    assert main(["anonymize", "clip.mp4", "-k", "my.key", *fast, "-o", "k.mp4"]) == 0
    assert codec.read_box(Path("k.mp4")) is not None
    Path("play.html").write_text('<video id="v" muted src="k.mp4"></video>')
    played = """() => new Promise(done => {
        const v = document.getElementById('v');
        v.onerror = () => done({error: v.error ? v.error.code : 'unknown'});
        v.onended = () => done({frames: v.getVideoPlaybackQuality().totalVideoFrames,
                                width: v.videoWidth, seconds: v.duration});
        v.play().catch(e => done({error: String(e)}));
        setTimeout(() => done({error: 'timeout', ready: v.readyState}), 15000);
    })"""
    with sync_playwright() as playwright:
        flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page()
        page.goto(Path("play.html").resolve().as_uri())
        result = page.evaluate(played)
        browser.close()
    assert result == {"frames": FRAMES, "width": 480, "seconds": pytest.approx(FRAMES / 25)}
