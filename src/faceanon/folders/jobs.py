"""The work on a folder's photos, behind ``faceanon anonymize`` / ``deanonymize`` and
:func:`faceanon.anonymize_folder`.

A *job* (:class:`AnonymizeJob`, :class:`DeanonymizeJob`) is built once from the settings and
the key (it loads the model); :meth:`Job.run` takes a batch of (input, output) paths
(:func:`faceanon.folders.plan.plan`) and returns one :class:`Row` per input: what happened and
the lines to print. :func:`run` checks the outputs and runs the jobs on this machine or on Ray
workers (:mod:`faceanon.folders.ray_engine`), so both engines write the same files and say the
same things.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError, first_line
from faceanon.folders.plan import Entry, Row, claim

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.methods.keyflip import Progress
    from faceanon.secure.container import Metadata
    from faceanon.secure.keys import SecretKey
    from faceanon.settings import Engine, OutputPolicy, Settings


@dataclass
class Result:
    image: Any  # np.ndarray
    metadata: str | None
    faces: int
    source: Any  # the input's Picture: its EXIF and ICC profile, kept with --keep-metadata
    boxes: list[Any] = field(default_factory=list)  # each face's box, for --report
    coverage: list[Any] = field(default_factory=list)  # share of each box the output replaced
    latents: Any = None  # keyflip: the exact face data a JPEG output carries (Outcome.latents)


def read_checked(path: Path, aligned_size: int | None) -> Any:
    """The picture; with --aligned, checked to be a crop of the backbone's size."""
    from faceanon.errors import ImageError
    from faceanon.media.io import read_image

    picture = read_image(path)
    height, width = picture.image.shape[:2]
    if aligned_size is not None and (height, width) != (aligned_size, aligned_size):
        raise ImageError(
            f"{path}: wrong size {width}x{height}; --aligned expects a "
            f"{aligned_size}x{aligned_size} aligned face crop"
        )
    return picture


class Job:
    """A command's work on batches of inputs; subclasses give ``prepare`` and ``work``.
    ``batch_size``: faces per network call; ``debug``: print the traceback of unexpected
    errors (each is still one line naming the file)."""

    def __init__(
        self,
        settings: Settings,
        policy: OutputPolicy,
        progress: Progress | None = None,
        batch_size: int = 1,
        debug: bool = False,
    ) -> None:
        self.settings, self.policy, self.progress = settings, policy, progress
        self.batch_size, self.debug = batch_size, debug
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
            if self.debug:
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
        from faceanon.media.io import write_image

        policy = self.policy
        if result.faces == 0 and not policy.write_faceless:
            line = f"{src}: no face found; nothing written (--write-faceless copies it)"
            return Row(str(src), "no face", faces=[], lines=[line])
        keep = policy.keep_metadata
        try:
            write_image(
                dst,
                result.image,
                result.metadata,
                overwrite=policy.overwrite,
                exif=result.source.exif if keep else None,
                icc=result.source.icc if keep else None,
                quality=policy.jpeg_quality,
                latents=result.latents,
            )
        except OutputExistsError as exc:
            if policy.skip_existing:  # another run wrote it meanwhile
                line = f"{dst}: written meanwhile by another run; kept"
                return Row(str(src), "already done", str(dst), lines=[line])
            return self._fail(src, exc)
        except Exception as exc:
            return self._fail(src, exc)
        boxes = [None if b is None else [round(float(v), 1) for v in b] for b in result.boxes]
        plural = "" if result.faces == 1 else "s"
        lines = [f"{src} -> {dst} ({result.faces} face{plural})"]
        from faceanon.faces.replace import COVERED

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
        settings: Settings,
        policy: OutputPolicy,
        key: SecretKey | None,
        progress: Progress | None = None,
        batch_size: int = 1,
        debug: bool = False,
        nonce: bytes | None = None,
    ) -> None:
        """``nonce``: every face gets this one, and every metadata seal (tests that compare
        engines byte for byte); None, the normal case: fresh random nonces."""
        from faceanon.loading import tools

        super().__init__(settings, policy, progress, batch_size, debug)
        self.key, self.nonce = key, nonce
        made = tools(settings, key)
        self.anonymizer, self.finder, self.size = made.anonymizer, made.finder, made.size
        self.model = made.model  # what anonymizes the faces, for the user

    def prepare(self, path: Path) -> Any:
        from faceanon.faces.finder import Face, crop_geometry

        picture = read_checked(path, self.size if self.settings.aligned else None)
        if self.finder is None:
            size = self.size
            return picture, [Face((0.0, 0.0, size, size), crop_geometry(size))]
        return picture, self.finder.find(picture.image)

    def work(self, batch: list[Any]) -> list[Result]:
        from faceanon.media import photos

        s = self.settings
        outcomes = photos.anonymize(
            [picture.image for picture, _ in batch],
            [faces for _, faces in batch],
            s.method,
            anonymizer=self.anonymizer,
            key=self.key if s.keyed else None,
            batch_size=self.batch_size,
            progress=self.progress,
            aligned=s.aligned,
            fixed_nonce=self.nonce,
            strength=s.strength,
            repeats=s.repeats,
            guide=s.guide,
            guide_scale=s.guide_scale,
        )
        return [
            Result(o.image, o.metadata, len(o.boxes), picture, o.boxes, o.coverage, o.latents)
            for o, (picture, _) in zip(outcomes, batch, strict=True)
        ]


LONG_RESTORE_CALLS = 5000  # network calls above which a restore is announced (20 faces at T=50)


def long_restore(path: Path, meta: Metadata, backbone: str, inversion: str | None) -> str | None:
    """A line saying what a file asks for when it is a lot of work (its metadata chooses the
    faces, steps and inversion, within the reader's bounds), so a long restore (or a file
    forged to make one) is never silent."""
    from faceanon.media.photos import restore_work

    work = restore_work(len(meta.faces), backbone, meta.steps, inversion or meta.inversion)
    return None if work.calls <= LONG_RESTORE_CALLS else f"note: {path}: {work}, a long restore"


class DeanonymizeJob(Job):
    """Restores: the model, steps and transform each file's metadata records; ``settings``
    only to override the model (``backbone`` / ``model_dir``), the device, the inversion and,
    for files without metadata (paper mode), how they were made."""

    def __init__(
        self,
        settings: Settings,
        policy: OutputPolicy,
        key: SecretKey,
        progress: Progress | None = None,
        batch_size: int = 1,
        debug: bool = False,
    ) -> None:
        super().__init__(settings, policy, progress, batch_size, debug)
        self.key = key
        self.backbones: dict[str, Backbone] = {}
        self.finders: dict[int, Any] = {}

    def backbone_for(self, path: Path, meta: Metadata) -> Backbone:
        from faceanon.backbones.registry import MODELS
        from faceanon.loading import backbone
        from faceanon.media import photos

        s = self.settings
        # --backbone / --model-dir replace whatever model the metadata names.
        if s.backbone is None and s.model_dir is None:
            name = photos.check_backbone(path, meta, list(MODELS))
        else:
            name = s.backbone or str(meta.backbone)
        if name not in self.backbones:
            self.backbones[name] = backbone(name, s.device, s.model_dir)
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
            from faceanon.loading import settings_finder

            self.finders[size] = settings_finder(self.settings, size)
        return self.finders[size]

    def without_metadata(self, path: Path, picture: Any) -> Metadata:
        from faceanon.backbones.registry import DEFAULT_BACKBONE
        from faceanon.diffusion.ddim_settings import ddim_defaults
        from faceanon.errors import MetadataError
        from faceanon.faces.masks import EllipseMask
        from faceanon.secure.container import FaceRecord, Metadata

        s = self.settings
        if not s.paper_mode:
            raise MetadataError(
                f"{path}: no faceanon metadata (stripped or re-saved?); an image anonymized"
                " in paper mode can be undone with --paper-mode --backbone NAME --steps T"
            )
        backbone = s.backbone or DEFAULT_BACKBONE
        steps = s.steps or ddim_defaults(backbone)[0]
        transform = s.key_transform
        if s.aligned:
            record = FaceRecord(None, mask=EllipseMask())
            return Metadata("keyflip", (record,), backbone, None, steps, transform=transform)
        height, width = picture.image.shape[:2]
        return Metadata("keyflip", (), backbone, None, steps, (width, height), transform=transform)

    def prepare(self, path: Path) -> Any:
        from faceanon.media import latents, photos
        from faceanon.media.io import exact_data_need

        picture = read_checked(path, None)
        if picture.faceanon is None:
            meta = self.without_metadata(path, picture)
        else:
            meta = photos.read_metadata(path, picture.faceanon)
        backbone = self.backbone_for(path, meta)
        inversion = self.settings.inversion
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
        residuals = None
        if picture.faceanon is not None:
            text = picture.faceanon
            need = exact_data_need(meta.method, picture.image, meta.display)
            residuals, note = latents.exact_faces(
                path, picture.latents, picture.lossy, text, len(meta.faces), backbone, need
            )
            self.notes += [note] if note else []
        return picture, meta, backbone, geometry, residuals

    def work(self, batch: list[Any]) -> list[Result]:
        from faceanon.media import photos

        outcomes = photos.restore(
            [
                (picture.image, meta, backbone, geometry)
                for picture, meta, backbone, geometry, _ in batch
            ],
            self.key,
            inversion=self.settings.inversion,
            batch_size=self.batch_size,
            progress=self.progress,
            residuals=[item[4] for item in batch],
        )
        return [
            Result(o.image, None, len(item[3]), item[0], o.boxes)
            for o, item in zip(outcomes, batch, strict=True)
        ]


def run(
    make_job: Callable[[Progress | None], Job],
    entries: Sequence[Entry],
    policy: OutputPolicy,
    engine: Engine,
    say: Callable[[str], None] = lambda line: None,
    label: Callable[[int, int, Entry], None] = lambda number, total, entry: None,
    progress: Progress | None = None,
) -> Iterator[Row]:
    """One row per entry: those :func:`claim` refuses first, then the others as the job
    (``make_job(progress)``, built once here or once per Ray worker) does them on
    ``engine``. ``say``: lines outside any row (Ray's start); ``label(number, total, entry)``:
    the entry about to be processed locally (numbered from 1), for a progress display."""
    todo, refused = claim(entries, policy)
    yield from refused
    if todo and engine.name == "ray":
        from faceanon.folders.ray_engine import run_on_ray

        yield from run_on_ray(make_job, todo, engine, say)
    elif todo:
        job = make_job(progress)
        if getattr(job, "model", None):
            job.notes.append(f"model: {job.model}")  # type: ignore[attr-defined]
        for start in range(0, len(todo), engine.batch_size):
            chunk = todo[start : start + engine.batch_size]
            label(start + 1, len(todo), chunk[0])
            yield from job.run(chunk)
