"""Folders of photos: which output each input gets, which outputs may be written, and what
became of each input (:class:`Row`, counted by :class:`Tally`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.settings import OutputPolicy

Entry = tuple[Path, Path]  # (input, output)


@dataclass
class Row:
    """What became of one input: ``status`` written, no face, failed or already done."""

    input: str
    status: str
    output: str | None = None
    faces: list[Any] | None = None  # boxes of the faces covered (written) or [] (no face)
    covered: list[Any] | None = None  # share of each face's box the output replaced
    error: str | None = None
    lines: list[str] = field(default_factory=list)  # to print, in order

    def report(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"input": self.input, "status": self.status, "output": self.output}
        if self.faces is not None:
            entry["faces"] = self.faces
        if self.covered is not None:
            entry["covered"] = self.covered
        if self.error is not None:
            entry["error"] = self.error
        return entry


def real(path: Path) -> Path:
    """Where ``path`` is on disk, to compare inputs and outputs; a path that cannot be resolved
    (a symbolic link loop) as written, absolute: its own read or write reports it."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def plan(inputs: Sequence[Path], out: Path | None, tag: str) -> tuple[list[Entry], list[str]]:
    """(input, output) pairs for photos: files as given, folders expanded recursively (their
    tree mirrored under a folder ``out``; beside each input without one), outputs named
    ``NAME_{tag}.png``; and the warnings to show. ``out`` may name the one output file of a
    single input. Raises when an output would replace an input."""
    from faceanon.media.io import IMAGE_SUFFIXES, WRITTEN_SUFFIXES, folder_files
    from faceanon.media.photos import output_name

    entries: list[Entry] = []
    notes: list[str] = []
    written = WRITTEN_SUFFIXES
    if out is not None and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir():
        if out.suffix.lower() not in written:  # not a folder name: a format we do not write
            raise FaceanonError(
                f"-o {out}: faceanon writes photos as {', '.join(written)}, not"
                f" {out.suffix}; name the output one of those, or give a folder"
            )
        if len(inputs) != 1 or inputs[0].is_dir():
            raise FaceanonError(f"-o {out}: one output file for several inputs; give a folder")
        entries.append((inputs[0], out))
        inputs = []
    for given in inputs:
        if not given.is_dir():
            entries.append((given, (out or given.parent) / output_name(given.name, tag)))
            continue
        images = folder_files(given, tag)
        if not images:
            notes.append(f"warning: {given}: no images found in this folder")
        for path in images:
            target = path.parent if out is None else out / path.parent.relative_to(given)
            entries.append((path, target / output_name(path.name, tag)))
    sources = {real(src) for src, _ in entries}
    for _, dst in entries:
        if real(dst) in sources:
            raise FaceanonError(f"{dst}: output would overwrite an input; choose another -o")
    return entries, notes


def plan_videos(
    inputs: Sequence[Path], out: Path | None, tag: str, lossless: bool = False
) -> tuple[list[Entry], list[Path]]:
    """(video, output) pairs among the inputs (files, and videos in folders), named as
    :func:`plan` names photos with the input's container where it takes H.264, else (and
    when ``lossless``) ``.mkv``; and the inputs left for :func:`plan`."""
    from faceanon.media import video
    from faceanon.media.io import IMAGE_SUFFIXES, folder_files
    from faceanon.media.photos import output_name

    pairs: list[Entry] = []
    rest: list[Path] = []
    single = out is not None and video.is_video(out) and not out.is_dir()
    for given in inputs:
        if given.is_dir():
            found = folder_files(given, tag, video.VIDEO_SUFFIXES)
            for path in found:
                folder = path.parent if out is None else out / path.parent.relative_to(given)
                name = output_name(path.name, tag).removesuffix(".png")
                pairs.append((path, folder / (name + video.output_suffix(path, lossless))))
            if folder_files(given, tag) or not found:
                rest.append(given)
        elif video.is_video(given):
            name = output_name(given.name, tag).removesuffix(".png")
            name += video.output_suffix(given, lossless)
            pairs.append(
                (given, out if out is not None and single else (out or given.parent) / name)
            )
        else:
            rest.append(given)
    if single and len(pairs) != 1:
        raise FaceanonError(f"-o {out}: one output file for several inputs; give a folder")
    photo_name = out is not None and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    if pairs and (single or photo_name):
        assert out is not None
        allowed = video.output_suffixes(lossless)
        if out.suffix.lower() not in allowed:  # the name must say what the file is
            raise FaceanonError(
                f"-o {out}: faceanon writes {'lossless ' if lossless else ''}videos as"
                f" {' or '.join(allowed)}; end the name with one of those, or give a folder"
            )
    return pairs, rest


def claim(entries: Sequence[Entry], policy: OutputPolicy) -> tuple[list[Entry], list[Row]]:
    """The entries to do, and a row for each one not to: an output two inputs would write,
    or one that exists (kept with ``skip_existing``, else an error)."""
    claimed: dict[Path, Path] = {}
    todo: list[Entry] = []
    rows: list[Row] = []

    def fail(src: Path, message: str) -> None:
        rows.append(Row(str(src), "failed", error=message, lines=[f"error: {message}"]))

    for src, dst in entries:
        if real(dst) in claimed:
            fail(src, f"{src}: its output {dst} is also that of {claimed[real(dst)]}")
            continue
        claimed[real(dst)] = src
        if dst.exists() and not policy.overwrite:
            if policy.skip_existing:
                rows.append(Row(str(src), "already done", str(dst)))
            else:
                fail(
                    src,
                    f"{src}: {dst} already exists (--overwrite replaces it, --skip-existing"
                    " keeps it)",
                )
            continue
        todo.append((src, dst))
    return todo, rows


@dataclass
class Tally:
    """The rows of a run counted: the summary line and the ``--report`` file."""

    tag: str  # anonymized or deanonymized
    rows: dict[str, Row] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"written": 0, "faces": 0, "skipped": 0, "failed": 0, "existing": 0}
    )
    per_photo: dict[int, int] = field(default_factory=dict)  # faces in a photo -> photos

    def add(self, row: Row) -> None:
        self.rows[row.input] = row
        key = {"written": "written", "no face": "skipped", "failed": "failed"}.get(row.status)
        self.counts[key or "existing"] += 1
        if row.status in ("written", "no face"):
            faces = len(row.faces or [])
            self.counts["faces"] += faces if row.status == "written" else 0
            self.per_photo[faces] = self.per_photo.get(faces, 0) + 1

    def summary(self, files: int, seconds: float, skip_existing: bool) -> str:
        c = self.counts
        histogram = ", ".join(
            f"{n} face{'' if n == 1 else 's'} x{count}"
            for n, count in sorted(self.per_photo.items())
        )
        return (
            f"{self.tag}: files {files}, written {c['written']}, faces {c['faces']}, "
            f"skipped (no face) {c['skipped']}, failed {c['failed']}, "
            + (f"already done {c['existing']}, " if skip_existing else "")
            + f"{seconds:.1f} s"
            + (f"; photos by faces found: {histogram}" if histogram else "")
        )

    def report(self, entries: Sequence[Entry]) -> str:
        """The JSON of ``--report``: the counts, and per input (in ``entries``' order) its
        status, output, faces' boxes and coverage, and error."""
        files = [self.rows[str(src)].report() for src, _ in entries if str(src) in self.rows]
        return json.dumps({"command": self.tag, "counts": self.counts, "files": files}, indent=1)
