"""The README cannot drift from the program: every `faceanon` command in it parses with the
command line it documents, and its Python blocks run (issue 32)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from faceanon.apps.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """Every `faceanon ...` command of the README's bash blocks, continuation lines joined and
    comments and shell operators cut off."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;|\{|\}", line.split("  #")[0]):
                part = part.strip()
                if part.startswith("faceanon "):
                    out.append(part)
    return out


def test_the_readme_has_commands_to_check() -> None:
    found = commands()
    assert len(found) > 25 and any(c.startswith("faceanon anonymize") for c in found)


@pytest.mark.parametrize("command", commands())
def test_every_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"README command does not parse ({exc.code}): {command}")


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_readme_python_block_runs(index: int, monkeypatch, tmp_path) -> None:
    import faceanon
    from faceanon.backbones.closed_form import GaussianBackbone

    # The blocks name examples/ relative to the repository and write beside it.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    # The calls are what is checked here, not the model: the exact Gaussian backbone stands
    # in for the embedded one (minutes here at its default 50 steps x 5 calls).
    monkeypatch.setattr(faceanon, "load_backbone", lambda *a, **k: GaussianBackbone())
    monkeypatch.setattr("faceanon.loading.backbone", lambda *a, **k: GaussianBackbone())
    code = blocks("python")[index]
    namespace: dict[str, object] = {}
    if index > 0:  # a later block goes on from the ones before it, as a reader's session does
        for earlier in blocks("python")[:index]:
            exec(compile(earlier, "README.md", "exec"), namespace)
    exec(compile(code, "README.md", "exec"), namespace)
