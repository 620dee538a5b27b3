"""Issue 10: every hostile or careless input gives one clear line, never a traceback, and a bad
file never stops the others. ``python tests/test_hostile.py`` prints the table of the closing
note (case, exit code, message)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import multiprocessing
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from faceanon.apps.cli import main
from faceanon.errors import FaceanonError, OutputExistsError
from faceanon.media.io import write_atomic
from faceanon.secure.container import Metadata
from faceanon.secure.keys import PassphraseSpec, SecretKey, read_key_file

FAST = ["--backbone", "closed-form", "--steps", "3", "--inversion", "ddim"]
Setup = Callable[[Path], list[str]]


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _image(path: Path, shape: tuple[int, ...], value: int = 120) -> None:
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _recheck(data: dict) -> None:
    import hashlib

    header = {k: v for k, v in data.items() if k not in ("sealed", "check")}
    aad = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    try:
        sealed = bytes.fromhex(data["sealed"]["nonce"]) + base64.b64decode(data["sealed"]["data"])
    except (KeyError, TypeError, ValueError):
        sealed = b""
    digest = hashlib.sha256(b"faceanon/check/v3\x00" + aad + sealed).digest()
    data["check"] = digest[:16].hex()


def _with_metadata(
    work: Path, name: str, edit: Callable[[dict], object], recheck: bool = True
) -> Path:
    """A copy of a real anonymized output whose metadata JSON was edited by ``edit``."""
    source = work / "anon_anonymized.png"
    if not source.exists():
        Image.fromarray(_astronaut()).save(work / "anon.png")
        assert main(["anonymize", str(work / "anon.png"), "-k", str(work / "my.key"), *FAST]) == 0
    with Image.open(source) as img:
        data = json.loads(img.text["faceanon"])
        pixels = img.convert("RGB")
    replaced = edit(data)
    if recheck and isinstance(data, dict):
        _recheck(data)  # an attacker recomputes the unkeyed checksum
    text = replaced if isinstance(replaced, str) else json.dumps(data)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("faceanon", text)
    out = work / f"{name}_anonymized.png"
    pixels.save(out, pnginfo=info)
    return out


def _set(path: list, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _deanon(name: str, edit: Callable[[dict], object], *extra: str, recheck: bool = True) -> Setup:
    def setup(work: Path) -> list[str]:
        path = _with_metadata(work, name, edit, recheck)
        return ["deanonymize", str(path), "-k", str(work / "my.key"), *extra]

    return setup


def _key_file(text: str) -> Setup:
    def setup(work: Path) -> list[str]:
        _image(work / "k.png", (64, 64, 3))
        (work / "bad.key").write_text(text)
        return ["anonymize", str(work / "k.png"), "-k", str(work / "bad.key"), *FAST]

    return setup


def _anon(shape: tuple[int, ...], *extra: str) -> Setup:
    def setup(work: Path) -> list[str]:
        _image(work / "img.png", shape)
        return ["anonymize", str(work / "img.png"), "-k", str(work / "my.key"), *FAST, *extra]

    return setup


def _deep(data: dict) -> str:
    return '{"faceanon":' + "[" * 100_000 + "]" * 100_000 + "}"


def _scrypt(log2_n: int, r: int, p: int) -> str:
    return PassphraseSpec(salt=b"s" * 16, log2_n=log2_n, r=r, p=p).to_text()


# (case, setup -> argv, expected exit code, expected message)
CASES: list[tuple[str, Setup, int, str]] = [
    ("1x1 image", _anon((1, 1, 3)), 0, "no face found"),
    ("3x500 image (too thin)", _anon((3, 500, 3)), 0, "no face found"),
    ("600x2 image (too thin)", _anon((600, 2, 3)), 0, "no face found"),
    ("1x1 image, dlib HOG", _anon((1, 1, 3), "--detector", "hog"), 0, "no face found"),
    ("--steps 0", _anon((64, 64, 3), "--steps", "0"), 2, "not a number of steps from 1 to 1000"),
    ("--steps 10**9", _anon((64, 64, 3), "--steps", "1000000000"), 2, "from 1 to 1000"),
    ("--threshold -1", _anon((64, 64, 3), "--threshold", "-1"), 2, "between 0 and 1"),
    ("--threshold 2", _anon((64, 64, 3), "--threshold", "2"), 2, "between 0 and 1"),
    ("--threshold nan", _anon((64, 64, 3), "--threshold", "nan"), 2, "between 0 and 1"),
    ("--device banana", _anon((64, 64, 3), "--device", "banana"), 2, "unknown device"),
    ("--batch-size 0", _anon((64, 64, 3), "--batch-size", "0"), 2, "at least 1"),
    (
        "--skip-existing with --overwrite",
        _anon((64, 64, 3), "--skip-existing", "--overwrite"),
        2,
        "contradict",
    ),
    (
        "keygen -o into a missing folder",
        lambda w: ["keygen", "-o", str(w / "no/k.key")],
        2,
        "does not exist",
    ),
    ("keygen -o into /proc", lambda w: ["keygen", "-o", "/proc/k.key"], 2, "cannot write key file"),
    (
        "keygen -o over an existing key",
        lambda w: ["keygen", "-o", str(w / "my.key")],
        2,
        "already exists",
    ),
    ("key file: binary", _key_file("\x00\xff" * 10), 2, "not a faceanon key file|one key line"),
    ("key file: 1 MB", _key_file("#" * 1_000_000), 2, "too large"),
    ("key file: mistyped", _key_file("FAK1-AAAA-BBBB"), 2, "wrong length|checksum"),
    ("passphrase key: scrypt 16 GiB", _key_file(_scrypt(22, 32, 1)), 2, "allows at most 1024 MiB"),
    ("passphrase key: scrypt p=16", _key_file(_scrypt(14, 8, 16)), 2, "4 passes"),
    ("passphrase key: N=2^40", _key_file(_scrypt(40, 8, 1)), 2, "out-of-range"),
    (
        "metadata: hub model named by the file",
        _deanon("hub", _set(["backbone"], "evil/model")),
        1,
        "which a file cannot choose",
    ),
    ("metadata: steps 10**9", _deanon("steps", _set(["steps"], 10**9)), 1, "steps must be"),
    ("metadata: steps 5.5", _deanon("steps55", _set(["steps"], 5.5)), 1, "steps must be"),
    (
        "metadata: 100000 faces",
        _deanon("faces", _set(["faces"], [{"nonce": None}] * 60_000)),
        1,
        "more than the photo can hold",
    ),
    (
        "metadata: NaN box",
        _deanon("nan", lambda d: d["faces"][0].update(box=[float("nan")] * 4)),
        1,
        "damaged",
    ),
    (
        "metadata: box outside the photo",
        _deanon("outside", _set(["faces", 0, "box"], [1e9, 0, 2e9, 9])),
        1,
        "outside the photo",
    ),
    (
        "metadata: 2 MB of JSON",
        _deanon("big", lambda d: d.update(pad="x" * 2_000_000)),
        1,
        "too large",
    ),
    ("metadata: nested 100000 deep", _deanon("deep", _deep), 1, "damaged"),
    ("metadata: not JSON", _deanon("garbage", lambda d: "{not json"), 1, "damaged"),
    (
        "metadata: photo size 10**6 x 10**6",
        _deanon("size", _set(["photo_size"], [10**6, 10**6])),
        1,
        "damaged",
    ),
    ("metadata: format 99", _deanon("future", _set(["faceanon"], 99)), 1, "upgrade faceanon"),
    (
        "metadata: inversion fixed-point:10**6",
        _deanon("inv", _set(["inversion"], "fixed-point:1000000")),
        1,
        "damaged",
    ),
    (
        "metadata: sealed data cut",
        _deanon("cut", lambda d: d["sealed"].update(data="AAAA")),
        1,
        "damaged",
    ),
    (
        "metadata: edited box (checksum)",
        _deanon("edited", lambda d: d["faces"][0]["box"].__setitem__(0, 1.0), recheck=False),
        1,
        "checksum",
    ),
]


def run_case(setup: Setup, work: Path) -> tuple[int, str]:
    argv = setup(work)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


@pytest.fixture()
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "-o", str(tmp_path / "my.key")]) == 0
    return tmp_path


def _message(err: str) -> str:
    lines = [line for line in err.splitlines() if re.match(r"(faceanon( \w+)?: )?error", line)]
    return lines[-1] if lines else err.strip().splitlines()[0]


@pytest.mark.parametrize(("case", "setup", "code", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_clear_line(work, case, setup, code, expected):
    got, err = run_case(setup, work)
    assert "Traceback" not in err and "unexpected" not in err
    assert got == code, err
    assert re.search(expected, err), err


def test_one_bad_file_never_stops_the_folder(work, monkeypatch, capsys):
    """Unexpected exceptions too: one line with the type, the other files go on."""
    from faceanon.faces import finder
    from faceanon.media import photos

    folder = work / "in"
    folder.mkdir()
    astro = _astronaut()
    for name in ("a", "b", "c"):
        Image.fromarray(astro).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    find = finder.FaceFinder.find

    def flaky(self, photo):
        if photo[0, 0, 0] == 7:
            raise RuntimeError("boom\nsecond line")
        return find(self, photo)

    astro_b = astro.copy()
    astro_b[0, 0, 0] = 7
    Image.fromarray(astro_b).save(folder / "b.png")
    monkeypatch.setattr(finder.FaceFinder, "find", flaky)
    assert main(["anonymize", "in", "-k", "my.key", "-o", "out", "--method", "blur"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"b\.png: unexpected RuntimeError: boom \(--debug shows the traceback\)", err)
    assert "broken.png: not an image" in err
    assert sorted(p.name for p in (work / "out").iterdir()) == [
        "a_anonymized.png",
        "c_anonymized.png",
    ]
    assert "files 4, written 2, faces 2, skipped (no face) 0, failed 2" in err
    # In a batch of several files, one that breaks the batch's work does not take the others
    # down with it: the batch is retried file by file.
    monkeypatch.setattr(finder.FaceFinder, "find", find)
    transform = photos.transform_photos

    def fragile(photos, *rest):
        if any(p[0, 0, 0] == 7 for p in photos):
            raise RuntimeError("bad batch")
        return transform(photos, *rest)

    monkeypatch.setattr(photos, "transform_photos", fragile)
    out = str(work / "batched")
    assert main(["anonymize", "in", "-o", out, "--method", "blur", "--batch-size", "4"]) == 1
    err = capsys.readouterr().err
    assert "b.png: unexpected RuntimeError: bad batch" in err
    assert "files 4, written 2, faces 2, skipped (no face) 0, failed 2" in err
    monkeypatch.setattr(finder.FaceFinder, "find", flaky)
    # --debug shows the traceback of the unexpected one.
    assert main(["anonymize", "in/b.png", "-o", "dbg", "--method", "blur", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_permission_error_is_not_called_corrupt(work, monkeypatch):
    from faceanon.media import io as fio

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    _image(work / "p.png", (64, 64, 3))
    monkeypatch.setattr(fio.Image, "open", denied)
    with pytest.raises(FaceanonError, match="cannot read \\(permission denied\\)"):
        fio.read_image(work / "p.png")


def test_skip_existing_resumes_a_folder(work, capsys):
    folder = work / "in"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(_astronaut()).save(folder / f"{name}.png")
    (work / "out").mkdir()
    (work / "out" / "a_anonymized.png").write_bytes(b"done before")
    assert main(["anonymize", "in", "-o", "out", "--method", "blur"]) == 1
    assert "--skip-existing keeps it" in capsys.readouterr().err
    (work / "out" / "b_anonymized.png").unlink()  # as if that run had been interrupted
    assert main(["anonymize", "in", "-o", "out", "--method", "blur", "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "written 1" in err and "already done 1" in err
    assert (work / "out" / "a_anonymized.png").read_bytes() == b"done before"


def _race(args: tuple[Path, int]) -> list[str]:
    folder, writer = args
    won = []
    for i in range(20):
        try:
            write_atomic(folder / f"{i}.png", f"writer {writer}".encode(), overwrite=False)
            won.append(f"{i}")
        except OutputExistsError:
            pass
    return won


def test_two_runs_never_overwrite_each_other(tmp_path):
    """'Never overwrite' is atomic: of two writers racing for 20 names, each name is written
    exactly once and keeps the content of the writer that created it."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_race, [(tmp_path, 0), (tmp_path, 1)])
    won = results[0] + results[1]
    assert sorted(won, key=int) == [str(i) for i in range(20)]  # each exactly once
    for writer, names in enumerate(results):
        for name in names:
            assert (tmp_path / f"{name}.png").read_bytes() == f"writer {writer}".encode()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "out.png", b"data", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_empty_passphrase_refused_and_short_one_warned(work, monkeypatch, capsys):
    monkeypatch.setenv("FACEANON_PASSPHRASE", "")
    assert main(["keygen", "--passphrase", "-o", "p.key"]) == 2
    assert "empty passphrase refused" in capsys.readouterr().err
    assert not (work / "p.key").exists()
    monkeypatch.setenv("FACEANON_PASSPHRASE", "hunter2")
    assert main(["keygen", "--passphrase", "-o", "p.key"]) == 0
    assert "7-character passphrase can be guessed" in capsys.readouterr().err


def _mutations(text: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # flip a character
        i = rng.randrange(len(text))
        return text[:i] + chr(rng.randrange(32, 127)) + text[i + 1 :]
    if kind == 1:  # cut
        return text[: rng.randrange(len(text))]
    if kind == 2:  # duplicate a slice
        i, j = sorted(rng.randrange(len(text)) for _ in range(2))
        return text[:j] + text[i:j] + text[j:]
    data = json.loads(text)
    hostile = [
        None,
        -1,
        0,
        2**70,
        1e308,
        float("inf"),
        "x" * 300,
        [],
        {},
        [[[]]],
        True,
        "fixed-point:9",
    ]
    if kind == 3:  # replace a top-level value
        data[rng.choice(sorted(data))] = rng.choice(hostile)
    else:  # replace a value inside a face
        face = data["faces"][0]
        face[rng.choice([*sorted(face), "turn", "mask"])] = rng.choice(hostile)
    return json.dumps(data)


def test_fuzzed_metadata_and_key_files_give_one_line_errors(work):
    """Seeded fuzzing of real output metadata and key files: every outcome is a parsed file or
    one FaceanonError line; nothing else escapes."""
    rng = random.Random(0)
    Image.fromarray(_astronaut()).save(work / "a.png")
    assert main(["anonymize", "a.png", "-k", "my.key", *FAST]) == 0
    with Image.open(work / "a_anonymized.png") as img:
        text = img.text["faceanon"]
    key = SecretKey.from_text((work / "my.key").read_text().splitlines()[-1])
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(400):
        try:
            meta = Metadata.from_json(_mutations(text, rng))
            if meta.sealed is not None and meta.photo_size is not None:
                meta.open(key, 256)
            outcomes["parsed"] += 1
        except FaceanonError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300  # the checksum and bounds refuse almost every mutation
    key_text = (work / "my.key").read_text()
    pass_text = "# c\n" + _scrypt(12, 8, 1) + "\n"
    for i in range(300):
        source = key_text if i % 2 else pass_text
        i_cut = rng.randrange(len(source))
        mutated = source[:i_cut] + chr(rng.randrange(0, 256)) + source[i_cut + 1 :]
        path = work / "fuzz.key"
        path.write_bytes(mutated.encode("latin-1"))
        try:
            read_key_file(path, lambda: "a passphrase")
        except FaceanonError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


def test_base64_of_sealed_data_is_strict(work):
    """Non-base64 characters in the sealed data are refused, not silently dropped."""
    path = _with_metadata(
        work, "b64", lambda d: d["sealed"].update(data="!!" + d["sealed"]["data"][2:])
    )
    with Image.open(path) as img, pytest.raises(FaceanonError, match="damaged"):
        Metadata.from_json(img.text["faceanon"])
    assert base64.b64decode("AAAA", validate=True) == b"\x00\x00\x00"


if __name__ == "__main__":  # the table of the closing note
    import tempfile

    print("| case | exit | message |\n|---|---|---|")
    for case, setup, _, _ in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            work_dir = Path(tmp)
            os.chdir(work_dir)
            with contextlib.redirect_stderr(io.StringIO()):
                main(["keygen", "-o", str(work_dir / "my.key")])
            code, err = run_case(setup, work_dir)
            message = _message(err).replace(str(work_dir) + "/", "").replace("|", "\\|")
            print(f"| {case} | {code} | `{message[:160]}` |")
    sys.exit(0)


def test_api_refuses_wrong_types_clearly(closed_form, face):
    from faceanon.anonymizer import Anonymizer

    for steps, error in ((5.5, TypeError), (True, TypeError), ("10", TypeError), (0, ValueError)):
        with pytest.raises(error, match="steps"):
            Anonymizer(closed_form, steps=steps)
    with pytest.raises(ValueError, match="transform"):
        Anonymizer(closed_form, transform="rot13")
    anonymizer = Anonymizer(closed_form, steps=np.int64(2))
    key = SecretKey.generate()
    with pytest.raises(TypeError, match=r"np\.asarray\(pil_image\)"):
        anonymizer.anonymize(Image.fromarray(face), key)
    with pytest.raises(TypeError, match="numpy uint8 arrays"):
        anonymizer.anonymize(None, key)
    for bad_key in (key.to_text(), None, key.material):
        with pytest.raises(TypeError, match="SecretKey"):
            anonymizer.anonymize(face, bad_key)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this torch build has CUDA")
def test_cuda_on_a_cpu_only_torch_is_one_line(work, capsys):
    _image(work / "c.png", (64, 64, 3))
    assert main(["anonymize", "c.png", "-k", "my.key", *FAST, "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU available to this torch build" in capsys.readouterr().err


def test_never_overwrite_also_without_hard_links(tmp_path, monkeypatch):
    """Where hard links fail (FAT, exFAT, some shares) the name is reserved exclusively."""

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(tmp_path / "a.png", b"first", overwrite=False)
    with pytest.raises(OutputExistsError):
        write_atomic(tmp_path / "a.png", b"second", overwrite=False)
    assert (tmp_path / "a.png").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_report_lists_every_input_with_its_boxes(work, capsys):
    folder = work / "in"
    folder.mkdir()
    Image.fromarray(_astronaut()).save(folder / "a.png")
    _image(folder / "empty.png", (100, 100, 3))
    (folder / "bad.png").write_bytes(b"not an image")
    argv = ["anonymize", "in", "-o", "out", "--method", "blur", "--report", "r.json"]
    assert main(argv) == 1
    report = json.loads((work / "r.json").read_text())
    files = {Path(f["input"]).name: f for f in report["files"]}
    assert files["a.png"]["status"] == "written" and len(files["a.png"]["faces"]) == 1
    x0, y0, x1, y1 = files["a.png"]["faces"][0]
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200  # the astronaut's face
    assert files["empty.png"]["status"] == "no face"
    assert files["bad.png"]["status"] == "failed" and "not an image" in files["bad.png"]["error"]
    assert report["counts"]["written"] == 1
    # An existing report is not replaced without --overwrite, and nothing is processed.
    assert main([*argv[:3], "out2", *argv[4:]]) == 2
    assert "r.json: already exists" in capsys.readouterr().err
    assert not (work / "out2").exists()


@pytest.mark.parametrize("count", [16, 17])
def test_anonymize_writes_only_what_deanonymize_accepts(closed_form, count):
    # A 64x64 photo holds at most 16 faces (one per 16x16 pixels): at the bound the file is
    # written and restores; one more face and nothing is written (faceanon 0.2 wrote it, and
    # deanonymize then called it damaged: those originals were lost).
    from faceanon.anonymizer import Anonymizer
    from faceanon.errors import MetadataError
    from faceanon.faces.finder import Face, _box_geometry
    from faceanon.media import photos

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    boxes = [
        (4.0 * (i % 8), 30.0 * (i // 8) % 40, 4.0 * (i % 8) + 24, 30.0 * (i // 8) % 40 + 24)
        for i in range(count)
    ]
    faces = [Face(b, _box_geometry(b, 256), from_landmarks=False) for b in boxes]
    anonymizer = Anonymizer(closed_form, steps=2, inversion="ddim")
    key = SecretKey(bytes(16))
    if count > 16:
        with pytest.raises(MetadataError, match=r"could not be restored.*more than the photo"):
            photos.anonymize([image], [faces], "keyflip", anonymizer=anonymizer, key=key)
        return
    [out] = photos.anonymize([image], [faces], "keyflip", anonymizer=anonymizer, key=key)
    meta = photos.read_metadata("photo.png", out.metadata)
    assert len(meta.faces) == 16


def test_a_long_restore_is_announced():
    # A file chooses its faces, steps and inversion (within the reader's bounds): a lot of work
    # is said before it starts, never silent (a forged file made a restore run 19 minutes).
    from faceanon.folders.jobs import long_restore
    from faceanon.secure.container import FaceRecord

    def meta(faces: int, steps: int = 50) -> Metadata:
        records = tuple(FaceRecord(bytes(16), (0.0, 0.0, 10.0, 10.0)) for _ in range(faces))
        return Metadata(
            "keyflip", records, "face-prior", None, steps, (640, 480), inversion="fixed-point:4"
        )

    assert long_restore(Path("a.png"), meta(19), "face-prior", None) is None  # 19 x 251 calls
    note = long_restore(Path("a.png"), meta(20), "face-prior", None)
    assert note is not None and "20 faces x 251 network calls" in note and "a.png" in note
    one = long_restore(Path("b.png"), meta(1, steps=1000), "face-prior", "fixed-point:8")
    assert one is not None and "1 face x 9001 network calls" in one


def test_an_output_name_says_what_the_file_is(tmp_path, monkeypatch, capsys):
    # -o with a photo or video extension faceanon does not write was taken as a folder name
    # (a folder "out.gif" appeared), and a keyflip video named .mp4 held Matroska.
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_astronaut()).save("a.png")
    for name in ("out.gif", "out.TIFF", "out.bmp"):
        assert main(["anonymize", "a.png", "--method", "blur", "-o", name]) == 2
        err = capsys.readouterr().err
        assert f"-o {name}: faceanon writes photos as .png, .jpg, .jpeg, .webp" in err
        assert not Path(name).exists()
    os.mkdir("run.gif")  # an existing folder is a folder, whatever its name
    assert main(["anonymize", "a.png", "--method", "blur", "-o", "run.gif"]) == 0
    assert Path("run.gif/a_anonymized.png").is_file()
    pytest.importorskip("av")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    make_clip(tmp_path / "c.mp4", 2, (160, 96), audio=False)
    assert main(["keygen", "-o", "k.key"]) == 0
    capsys.readouterr()
    for name in ("x.avi", "x.gif"):
        assert main(["anonymize", "c.mp4", "-k", "k.key", "-o", name, *FAST]) == 2
        err = capsys.readouterr().err
        assert f"-o {name}: faceanon writes videos as .mp4 or .mov or .mkv or .m4v;" in err, err
        assert not Path(name).exists()
    assert main(["anonymize", "c.mp4", "-k", "k.key", "--lossless", "-o", "x.mp4", *FAST]) == 2
    assert "-o x.mp4: faceanon writes lossless videos as .mkv;" in capsys.readouterr().err
    assert not Path("x.mp4").exists()


def test_a_termination_signal_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    # SIGTERM (a service manager, `timeout`, a closed terminal's SIGHUP) stops faceanon like
    # Ctrl-C: the unfinished output's temporary file is removed, and it says so.
    import signal

    pytest.importorskip("av")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    from faceanon.media import video

    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "c.mp4", 6, (160, 96), audio=False)
    original = video.Writer.write
    written = []

    def write_then_stop(self, rgb, like):  # type: ignore[no-untyped-def]
        original(self, rgb, like)
        written.append(1)
        if len(written) == 2:
            assert list(tmp_path.glob(".c_anonymized-*")), "no temporary file to clean up?"
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(video.Writer, "write", write_then_stop)
    assert main(["anonymize", "c.mp4", "--method", "blur"]) == 128 + signal.SIGTERM
    assert "faceanon: stopped by SIGTERM" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the run


def test_key_files_saved_by_other_editors_still_read(tmp_path):
    # Notepad and friends add a UTF-8 byte-order mark, save "Unicode" as UTF-16, end lines
    # with CRLF: the same key. Other bytes stay "not text", in one line.
    key = SecretKey.generate()
    text = f"# a comment\n{key.to_text()}\n"
    variants = {
        "bom": b"\xef\xbb\xbf" + text.encode(),
        "utf16": text.encode("utf-16"),
        "utf16be": b"\xfe\xff" + text.encode("utf-16-be"),
        "crlf": text.replace("\n", "\r\n").encode(),
    }
    for name, data in variants.items():
        (tmp_path / f"{name}.key").write_bytes(data)
        assert read_key_file(tmp_path / f"{name}.key").material == key.material, name
    (tmp_path / "latin.key").write_bytes(text.encode() + "é".encode("latin-1"))
    with pytest.raises(FaceanonError, match=r"latin\.key: not a faceanon key file \(not text\)"):
        read_key_file(tmp_path / "latin.key")


def test_unresolvable_inputs_and_odd_video_sizes(tmp_path, monkeypatch, capsys):
    # A symbolic link loop among the inputs stopped the whole run with "unexpected
    # RuntimeError"; now it fails alone, with the file system's reason. A video of odd width
    # (H.264 4:2:0 refuses it) was not written at all.
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_astronaut()).save("a.png")
    os.symlink("l2.png", "l1.png")
    os.symlink("l1.png", "l2.png")
    assert main(["anonymize", "l1.png", "a.png", "--method", "blur", "-o", "out"]) == 1
    err = capsys.readouterr().err
    assert "l1.png: cannot read (Too many levels of symbolic links)" in err, err
    assert sorted(p.name for p in Path("out").iterdir()) == ["a_anonymized.png"]
    av = pytest.importorskip("av")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_clip import make_clip

    make_clip(tmp_path / "odd.mkv", 3, (161, 97), audio=False, codec="ffv1")
    assert main(["anonymize", "odd.mkv", "--method", "blur"]) == 0
    assert "odd width or height, written as H.264 4:4:4" in capsys.readouterr().err
    with av.open("odd_anonymized.mkv") as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (161, 97) and stream.codec_context.name == "h264"
        assert len(list(container.decode(video=0))) == 3


def _latents_data(header: dict[str, object], body: bytes) -> bytes:
    import json

    return json.dumps(header).encode() + b"\n" + body


LATENT_CASES = [
    ("not json", b"{not json\n", "damaged"),
    ("unknown version", _latents_data({"faceanon-latents": 9}, b""), "damaged (unknown version)"),
    (
        "huge shapes",
        _latents_data(
            {"faceanon-latents": 1, "metadata": "", "shapes": [[4096, 4096, 4]], "width": 2}, b""
        ),
        "damaged (latents too large)",
    ),
    (
        "zlib bomb",  # 10 MB of zeros claimed as one small latent: stops at the claimed length
        _latents_data(
            {"faceanon-latents": 1, "metadata": "", "shapes": [[3, 8, 8]], "width": 1},
            __import__("zlib").compress(bytes(10_000_000)),
        ),
        "its length does not match its header",
    ),
    (
        "truncated",
        _latents_data(
            {"faceanon-latents": 1, "metadata": "", "shapes": [[3, 8, 8]], "width": 1},
            __import__("zlib").compress(bytes(192))[:-4],
        ),
        "damaged",
    ),
    (
        "bool in shape",
        _latents_data({"faceanon-latents": 1, "shapes": [[True, 8, 8]], "width": 1}, b""),
        "bad latent shape",
    ),
]


def test_video_documents_of_both_versions_are_read_and_damage_is_one_line(
    tmp_path, monkeypatch
) -> None:
    """A keyflip video's document (media.codec): version 2 (JSON line, then the exact face
    data as bytes) and version 1 (base64 texts inside the JSON) read alike; lengths that do
    not add up to the data, or entries of the wrong kind, are one line; a version-1 text that
    is not base64 becomes data its frame's restore refuses (one line there)."""
    from faceanon.errors import MetadataError, VideoError
    from faceanon.media import codec

    class NoStreams:
        streams = ()

    def read(data: bytes) -> tuple[list[str | None], list[bytes | None]]:
        path = tmp_path / "x.mp4"
        path.write_bytes(b"")
        codec.add_document(path, data, path)
        return codec.read_document(path, NoStreams())

    blob = b"\x00binary\n\xff"
    v1 = {"faceanon_video": 1, "frames": 3, "metadata": ["{}", None, "{}"]}
    v1["latents"] = [base64.b64encode(blob).decode(), None, "!!"]
    v2 = codec.make_document(["{}", None, "{}"], [blob, None, b"x"])
    assert b'"latents":[9,null,1]' in v2
    assert read(v2) == (["{}", None, "{}"], [blob, None, b"x"])
    assert read(json.dumps(v1).encode()) == (["{}", None, "{}"], [blob, None, b""])
    assert read(codec.make_document(["{}"], None)) == (["{}"], [None])
    monkeypatch.setattr(codec, "MAX_DOCUMENT_BYTES", 100)  # a writer never makes what it refuses
    with pytest.raises(VideoError, match="over the 0 MiB one video may carry"):
        codec.make_document(["{}"] * 9, [b"x" * 20] * 9)
    monkeypatch.undo()
    for bad, problem in (
        (v2[:-1], "lengths do not match"),
        (v2 + b"y", "lengths do not match"),
        (v2.replace(b'"latents":[9', b'"latents":[true'), "wrong kind"),
        (v2.replace(b'"latents":[9', b'"latents":["9"'), "wrong kind"),
        (v2.replace(b'"faceanon_video":2', b'"faceanon_video":3'), "unknown version"),
    ):
        with pytest.raises(MetadataError, match=problem):
            read(bad)


@pytest.mark.parametrize(
    ("what", "data", "message"), LATENT_CASES, ids=[c[0] for c in LATENT_CASES]
)
def test_exact_face_data_refused_in_one_line(what: str, data: bytes, message: str) -> None:
    """A JPEG's exact face data (media.latents) is untrusted: damaged, oversized or bomb-like
    data is one MetadataError line, read within the claimed size; good data for another
    image's metadata is refused as foreign."""
    from faceanon.errors import MetadataError
    from faceanon.media import latents

    with pytest.raises(MetadataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        latents.decode(data, "{}", 1)
    exact = latents.quantise(np.zeros((3, 8, 8)))
    good = latents.encode([exact], [np.full((3, 8, 8), 0.5)], "metadata A")
    [residual] = latents.decode(good, "metadata A", 1)
    assert residual is not None and residual.shape == (3, 8, 8)
    exact = latents.restored(np.full((3, 8, 8), 0.5), residual)  # the lossy latent + residual
    assert np.abs(exact).max() <= latents.STEP / 2
    with pytest.raises(MetadataError, match="belongs to another image"):
        latents.decode(good, "metadata B", 1)
