"""Issue 15: ``--engine ray`` writes what the local engine writes, byte for byte, reports a bad
file and goes on, and resumes. A local Ray instance (2 CPUs) on photos made from the example
photo."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanon.apps.cli import main
from faceanon.folders.jobs import AnonymizeJob, run
from faceanon.secure.keys import SecretKey
from faceanon.settings import Engine, OutputPolicy, Settings

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[test]'")

FAST = ["--backbone", "closed-form", "--steps", "3", "--inversion", "ddim"]
SETTINGS = Settings(backbone="closed-form", steps=3, inversion="ddim")


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _photos(folder: Path, count: int) -> list[Path]:
    """The example photo, shifted and mirrored: different photos, one face each."""
    root = Path(__file__).resolve().parents[1]
    photo = np.asarray(Image.open(root / "examples" / "astronaut.jpg").convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = np.roll(photo, 30 * i, axis=1)
        image = image[:, ::-1] if i % 2 else image
        paths.append(folder / f"p{i}.png")
        Image.fromarray(np.ascontiguousarray(image)).save(paths[-1])
    return paths


def test_ray_writes_the_local_engines_bytes(tmp_path, local_ray, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    inputs = _photos(tmp_path / "in", 3)
    key = SecretKey(bytes(range(16)))
    policy = OutputPolicy()
    for engine in ("local", "ray"):
        make_job = partial(
            AnonymizeJob, SETTINGS, policy, key, batch_size=2, nonce=bytes(range(16, 32))
        )
        entries = [(p, Path(engine) / f"{p.stem}_anonymized.png") for p in inputs]
        rows = list(run(make_job, entries, policy, Engine(engine, batch_size=2)))
        assert sorted(r.status for r in rows) == ["written"] * 3
    for p in inputs:
        local = (tmp_path / "local" / f"{p.stem}_anonymized.png").read_bytes()
        assert local == (tmp_path / "ray" / f"{p.stem}_anonymized.png").read_bytes()
        assert local != p.read_bytes()


def test_ray_cli_reports_bad_files_and_resumes(tmp_path, local_ray, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_text("not an image")
    assert main(["keygen", "-o", "my.key"]) == 0
    command = ["anonymize", "in", "-k", "my.key", "-o", "out", "--engine", "ray", "--workers", "1"]
    assert main([*command, *FAST]) == 1
    err = capsys.readouterr().err
    assert "error: in/broken.png: not an image, or a format Pillow cannot read" in err
    assert "files 4, written 3, faces 3, skipped (no face) 0, failed 1" in err
    assert "ray: 4 inputs, 1 workers of 1 CPU" in err
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"p{i}_anonymized.png" for i in range(3)]
    stamps = [p.stat().st_mtime_ns for p in written]
    # The same command again with --skip-existing, the bad file removed: what is done is left
    # (the done files are set aside before any worker starts, so no Ray job runs at all).
    (tmp_path / "in" / "broken.png").unlink()
    assert main([*command, *FAST, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "written 0, faces 0, skipped (no face) 0, failed 0, already done 3" in err
    assert "ray: " not in err
    assert [p.stat().st_mtime_ns for p in written] == stamps
    # Restored on Ray and locally: the same bytes (the outputs carry all the undo needs).
    undo = ["deanonymize", "out", "-k", "my.key"]
    assert main([*undo, "-o", "back-ray", "--engine", "ray", "--workers", "1"]) == 0
    assert main([*undo, "-o", "back-local"]) == 0
    for i in range(3):
        name = f"p{i}_deanonymized.png"
        assert (tmp_path / "back-ray" / name).read_bytes() == (
            tmp_path / "back-local" / name
        ).read_bytes()


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["anonymize", "in", "--method", "blur", "--engine", "ray"]) == 2
    assert "--engine ray needs Ray: pip install 'faceanon[ray]'" in capsys.readouterr().err
