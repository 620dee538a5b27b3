"""Folders of photos: the batch work behind ``faceanon anonymize`` / ``deanonymize``.

A *job* (:class:`AnonymizeJob`, :class:`DeanonymizeJob`) is built once from the command's
options and the key (it loads the model); :meth:`Job.run` takes a batch of (input, output)
paths and returns one :class:`Row` per input: what happened and the lines to print. The same
jobs run on this machine (:func:`run_local`) and on Ray workers (:mod:`faceanon.ray_engine`),
so both engines write the same files and say the same things; the CLI only prints the rows.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError, first_line

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.container import Metadata
    from faceanon.keys import SecretKey
    from faceanon.methods.keyflip import Progress

Entry = tuple[Path, Path]  # (input, output)


def load_backbone(name: str, model_dir: Path | None, device: str) -> Backbone:
    from faceanon.api import resolve_device
    from faceanon.backbones.registry import load_backbone as load

    return load(name, model_dir=model_dir, device=resolve_device(device))


def resolve_transform(args: argparse.Namespace) -> str:
    """--transform as given; else the paper's flip in paper mode (its stripped-metadata undo
    re-finds the mask, and only the flip tolerates a mask a few cells off), else the default."""
    from faceanon.transforms import DEFAULT_TRANSFORM

    if args.transform is not None:
        return str(args.transform)
    return "flip" if args.paper_mode else DEFAULT_TRANSFORM


@dataclass
class Result:
    image: Any  # np.ndarray
    metadata: str | None
    faces: int
    source: Any  # the input's Picture: its EXIF and ICC profile, kept with --keep-metadata
    boxes: list[Any] = field(default_factory=list)  # each face's box, for --report
    coverage: list[Any] = field(default_factory=list)  # share of each box the output replaced


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


def read_checked(path: Path, aligned_size: int | None) -> Any:
    """The picture; with --aligned, checked to be a crop of the backbone's size."""
    from faceanon.errors import ImageError
    from faceanon.io import read_image

    picture = read_image(path)
    height, width = picture.image.shape[:2]
    if aligned_size is not None and (height, width) != (aligned_size, aligned_size):
        raise ImageError(
            f"{path}: wrong size {width}x{height}; --aligned expects a "
            f"{aligned_size}x{aligned_size} aligned face crop"
        )
    return picture


def make_finder(args: argparse.Namespace, size: int, hint: str | None = None) -> Any:
    """The face finder the arguments ask for; ``hint``: the backbone's ControlNet hint kind."""
    from faceanon.api import face_finder

    mask = getattr(args, "mask", None) or "landmarks"
    parser_model = getattr(args, "parser_model", None)
    return face_finder(
        args.detector,
        args.threshold,
        size,
        args.recall,
        args.upright_only,
        mask,
        parser_model if mask == "parser" else None,
        hint,
    )


class Job:
    """A command's work on batches of inputs; subclasses give ``prepare`` and ``work``."""

    def __init__(self, args: argparse.Namespace, progress: Progress | None = None) -> None:
        self.args, self.progress = args, progress
        self.notes: list[str] = []  # warnings said while preparing, printed with the next row

    def prepare(self, path: Path) -> Any:
        raise NotImplementedError

    def work(self, batch: list[Any]) -> list[Result]:
        raise NotImplementedError

    def _fail(self, src: Path, exc: BaseException) -> Row:
        """One line per failed file, naming it; the run goes on with the others."""
        if isinstance(exc, FaceanonError):
            message = str(exc)
            message = message if message.startswith(str(src)) else f"{src}: {message}"
        else:  # a bug, or a case nobody foresaw: still one line, the traceback on request
            message = f"{src}: unexpected {first_line(exc)}"
            if self.args.debug:
                traceback.print_exception(exc, file=sys.stderr)
            else:
                message += " (--debug shows the traceback)"
        return Row(str(src), "failed", error=message, lines=[f"error: {message}"])

    def run(self, entries: Sequence[Entry]) -> list[Row]:
        """Prepare each input, transform them together, write each output atomically."""
        rows: dict[int, Row] = {}
        ready: list[tuple[int, Any]] = []
        for i, (src, _) in enumerate(entries):
            try:
                ready.append((i, self.prepare(src)))
            except Exception as exc:
                rows[i] = self._fail(src, exc)
        for i, result in self._work(entries, ready, rows):
            rows[i] = self._write(*entries[i], result)
        out = [rows[i] for i in range(len(entries))]
        if self.notes and out:
            out[0].lines[:0] = self.notes
            self.notes = []
        return out

    def _work(
        self, entries: Sequence[Entry], ready: list[tuple[int, Any]], rows: dict[int, Row]
    ) -> Iterator[tuple[int, Result]]:
        if not ready:
            return
        try:
            results = self.work([item for _, item in ready])
        except Exception as exc:
            if len(ready) == 1:
                rows[ready[0][0]] = self._fail(entries[ready[0][0]][0], exc)
                return
            for one in ready:  # one file spoiled the batch: each on its own
                yield from self._work(entries, [one], rows)
            return
        yield from zip((i for i, _ in ready), results, strict=True)

    def _write(self, src: Path, dst: Path, result: Result) -> Row:
        from faceanon.errors import OutputExistsError
        from faceanon.io import write_image

        args = self.args
        if result.faces == 0 and not args.write_faceless:
            line = f"{src}: no face found; nothing written (--write-faceless copies it)"
            return Row(str(src), "no face", faces=[], lines=[line])
        keep = args.keep_metadata
        try:
            write_image(
                dst,
                result.image,
                result.metadata,
                overwrite=args.overwrite,
                exif=result.source.exif if keep else None,
                icc=result.source.icc if keep else None,
            )
        except OutputExistsError as exc:
            if args.skip_existing:  # another run wrote it meanwhile
                line = f"{dst}: written meanwhile by another run; kept"
                return Row(str(src), "already done", str(dst), lines=[line])
            return self._fail(src, exc)
        except Exception as exc:
            return self._fail(src, exc)
        boxes = [None if b is None else [round(float(v), 1) for v in b] for b in result.boxes]
        plural = "" if result.faces == 1 else "s"
        lines = [f"{src} -> {dst} ({result.faces} face{plural})"]
        from faceanon.pipeline import COVERED

        shares = result.coverage or [None] * len(boxes)  # restores do not measure it
        covered = [None if c is None else round(float(c), 3) for c in shares]
        for i, (box, share) in enumerate(zip(boxes, covered, strict=True), 1):
            if box is not None and share is not None and share < COVERED:
                where = ", ".join(f"{v:.0f}" for v in box)
                lines.append(
                    f"warning: {src}: face {i} (box {where}) only {share:.0%} covered:"
                    " check it before publishing"
                )
        measured = any(c is not None for c in covered)
        return Row(
            str(src),
            "written",
            str(dst),
            faces=boxes,
            covered=covered if measured else None,
            lines=lines,
        )


class AnonymizeJob(Job):
    def __init__(
        self,
        args: argparse.Namespace,
        key: SecretKey | None,
        progress: Progress | None = None,
        nonce: bytes | None = None,
    ) -> None:
        """``nonce``: every face gets this one, and every metadata seal (tests that compare
        engines byte for byte); None, the normal case: fresh random nonces."""
        from faceanon.anonymizer import Anonymizer

        super().__init__(args, progress)
        self.key, self.anonymizer, self.size, self.nonce = key, None, 256, nonce
        hint: str | None = None
        self.model: str | None = None  # what anonymizes the faces, for the user
        if args.method in ("keyflip", "hydro"):
            from faceanon import photos

            if key is None and args.method == "keyflip":
                raise FaceanonError("--method keyflip needs a key: -k KEYFILE (faceanon keygen)")
            backbone = load_backbone(args.backbone, args.model_dir, args.device)
            self.model = photos.describe_model(backbone)
            self.anonymizer = Anonymizer(
                backbone, args.steps, args.paper_mode, args.inversion, resolve_transform(args)
            )
            self.size = backbone.image_size
            hint = getattr(backbone, "conditioning", None)
        if args.aligned and getattr(args, "mask", None) is not None:
            raise FaceanonError(
                "--mask is for photos: --aligned crops use the ellipse their metadata records"
            )
        self.finder = None if args.aligned else make_finder(args, self.size, hint)

    def prepare(self, path: Path) -> Any:
        from faceanon.pipeline import Face, crop_geometry

        picture = read_checked(path, self.size if self.args.aligned else None)
        if self.finder is None:
            size = self.size
            return picture, [Face((0.0, 0.0, size, size), crop_geometry(size))]
        return picture, self.finder.find(picture.image)

    def work(self, batch: list[Any]) -> list[Result]:
        from faceanon import photos

        outcomes = photos.anonymize(
            [picture.image for picture, _ in batch],
            [faces for _, faces in batch],
            self.args.method,
            anonymizer=self.anonymizer,
            key=self.key,
            batch_size=self.args.batch_size,
            progress=self.progress,
            aligned=self.args.aligned,
            fixed_nonce=self.nonce,
            strength=getattr(self.args, "strength", 0.6),
            repeats=getattr(self.args, "repeats", 1),
        )
        return [
            Result(o.image, o.metadata, len(o.boxes), picture, o.boxes, o.coverage)
            for o, (picture, _) in zip(outcomes, batch, strict=True)
        ]


LONG_RESTORE_CALLS = 5000  # network calls above which a restore is announced (20 faces at T=50)


def long_restore(path: Path, meta: Metadata, backbone: str, inversion: str | None) -> str | None:
    """A line saying what a file asks for when it is a lot of work (its metadata chooses the
    faces, steps and inversion, within the reader's bounds), so a long restore (or a file
    forged to make one) is never silent."""
    from faceanon.photos import restore_work

    work = restore_work(len(meta.faces), backbone, meta.steps, inversion or meta.inversion)
    return None if work.calls <= LONG_RESTORE_CALLS else f"note: {path}: {work}, a long restore"


class DeanonymizeJob(Job):
    def __init__(
        self, args: argparse.Namespace, key: SecretKey, progress: Progress | None = None
    ) -> None:
        super().__init__(args, progress)
        self.key = key
        self.backbones: dict[str, Backbone] = {}
        self.finders: dict[int, Any] = {}

    def backbone_for(self, path: Path, meta: Metadata) -> Backbone:
        from faceanon import photos
        from faceanon.backbones.registry import MODELS

        args = self.args
        # --backbone / --model-dir replace whatever model the metadata names.
        if args.backbone is None and args.model_dir is None:
            name = photos.check_backbone(path, meta, list(MODELS))
        else:
            name = args.backbone or str(meta.backbone)
        if name not in self.backbones:
            self.backbones[name] = load_backbone(name, args.model_dir, args.device)
            self.notes.append(f"model: {photos.describe_model(self.backbones[name])}")
        loaded = self.backbones[name].revision
        if meta.revision and loaded and meta.revision != loaded:
            self.notes.append(
                f"warning: {path}: made with {name}@{meta.revision[:7]}, undoing with "
                f"{loaded[:7]}: recovery may fail"
            )
        return self.backbones[name]

    def finder(self, size: int) -> Any:
        if size not in self.finders:
            self.finders[size] = make_finder(self.args, size)
        return self.finders[size]

    def without_metadata(self, path: Path, picture: Any) -> Metadata:
        from faceanon.backbones.registry import DEFAULT_BACKBONE
        from faceanon.container import FaceRecord, Metadata
        from faceanon.engine import engine_defaults
        from faceanon.errors import MetadataError
        from faceanon.masks import EllipseMask

        args = self.args
        if not args.paper_mode:
            raise MetadataError(
                f"{path}: no faceanon metadata (stripped or re-saved?); an image anonymized"
                " in paper mode can be undone with --paper-mode --backbone NAME --steps T"
            )
        backbone = args.backbone or DEFAULT_BACKBONE
        steps = args.steps or engine_defaults(backbone)[0]
        transform = resolve_transform(args)
        if args.aligned:
            record = FaceRecord(None, mask=EllipseMask())
            return Metadata("keyflip", (record,), backbone, None, steps, transform=transform)
        height, width = picture.image.shape[:2]
        return Metadata("keyflip", (), backbone, None, steps, (width, height), transform=transform)

    def prepare(self, path: Path) -> Any:
        from faceanon import photos

        picture = read_checked(path, None)
        if picture.faceanon is None:
            meta = self.without_metadata(path, picture)
        else:
            meta = photos.read_metadata(path, picture.faceanon)
        backbone = self.backbone_for(path, meta)
        inversion = getattr(self.args, "inversion", None)
        if (note := long_restore(path, meta, backbone.name, inversion)) is not None:
            self.notes.append(note)
        size = backbone.image_size
        meta, geometry = photos.restore_geometry(
            path,
            picture.image,
            meta,
            self.key,
            size,
            lambda: self.finder(size),
            detect=picture.faceanon is None,
        )
        return picture, meta, backbone, geometry

    def work(self, batch: list[Any]) -> list[Result]:
        from faceanon import photos

        outcomes = photos.restore(
            [
                (picture.image, meta, backbone, geometry)
                for picture, meta, backbone, geometry in batch
            ],
            self.key,
            inversion=self.args.inversion,
            batch_size=self.args.batch_size,
            progress=self.progress,
        )
        return [
            Result(o.image, None, len(item[3]), item[0], o.boxes)
            for o, item in zip(outcomes, batch, strict=True)
        ]


def run_local(
    job: Job, entries: Sequence[Entry], batch_size: int, label: Callable[[Entry], None]
) -> Iterator[Row]:
    """The job on this machine, ``batch_size`` inputs at a time (``label``: the input about
    to be processed, for a progress display)."""
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        label(chunk[0])
        yield from job.run(chunk)
