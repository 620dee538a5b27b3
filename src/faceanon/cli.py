"""``faceanon``: parse, call the library, print one line per problem. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.keys import SecretKey

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "FACEANON_PASSPHRASE"
MIN_PASSPHRASE = 20  # shorter ones get a warning at keygen (README, Keys)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception nobody foresaw."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}"


def _ask_passphrase(confirm: bool = False) -> Callable[[], str]:
    def ask() -> str:
        if PASSPHRASE_ENV in os.environ:
            return os.environ[PASSPHRASE_ENV]
        if not sys.stdin.isatty():
            raise FaceanonError(f"passphrase needed: set {PASSPHRASE_ENV} or run in a terminal")
        first = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise FaceanonError("the two passphrases differ")
        return first

    return ask


def _load_key(path: Path) -> SecretKey:
    from faceanon.keys import read_key_file

    return read_key_file(path, _ask_passphrase())


def _device(name: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N or mps, checked against this torch build."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise FaceanonError(f"--device {name}: unknown device (auto, cpu, cuda, cuda:N, mps)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FaceanonError(
                f"--device {name}: no CUDA GPU available to this torch build "
                f"({torch.__version__}); use --device cpu or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= count:
            raise FaceanonError(f"--device {name}: only {count} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FaceanonError(f"--device {name}: Apple MPS is not available here")
    return name


def _load_backbone(name: str, model_dir: Path | None, device: str) -> Backbone:
    from faceanon.backbones.registry import load_backbone

    return load_backbone(name, model_dir=model_dir, device=_device(device))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.label = ""
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        self.show(f": step {done}/{total}")

    def show(self, detail: str = "") -> None:
        if self.live:
            print(f"\r\033[K{self.label}{detail}", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _folder_images(folder: Path, tag: str) -> list[Path]:
    """Images under ``folder`` (recursive, hidden ones skipped): for anonymize, not our own
    outputs; for deanonymize, only ``*_anonymized`` files."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if tag == "deanonymized":
            wanted = path.stem.endswith("_anonymized")
        else:
            wanted = not path.stem.endswith(("_anonymized", "_deanonymized"))
        if wanted:
            found.append(path)
    return found


def _jobs(inputs: Sequence[Path], out: Path | None, tag: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: files as given, folders expanded (mirrored under ``-o DIR``)."""
    from faceanon.io import JPEG_SUFFIXES, PNG_SUFFIXES
    from faceanon.photos import output_name

    jobs = []
    if out is not None and out.suffix.lower() in PNG_SUFFIXES + JPEG_SUFFIXES and not out.is_dir():
        if len(inputs) != 1 or inputs[0].is_dir():
            raise FaceanonError(f"-o {out}: one output file for several inputs; give a folder")
        jobs.append((inputs[0], out))
        inputs = []
    for given in inputs:
        if not given.is_dir():
            jobs.append((given, (out or given.parent) / output_name(given.name, tag)))
            continue
        images = _folder_images(given, tag)
        if not images:
            _say(f"warning: {given}: no images found in this folder")
        for path in images:
            target = path.parent if out is None else out / path.parent.relative_to(given)
            jobs.append((path, target / output_name(path.name, tag)))
    sources = {src.resolve() for src, _ in jobs}
    for _, dst in jobs:
        if dst.resolve() in sources:
            raise FaceanonError(f"{dst}: output would overwrite an input; choose another -o")
    if any(dst.suffix.lower() in JPEG_SUFFIXES for _, dst in jobs):
        _say("warning: JPEG is lossy, de-anonymization will be less accurate (use PNG)")
    return jobs


@dataclass
class _Result:
    image: Any  # np.ndarray
    metadata: str | None
    faces: int
    source: Any  # the input's Picture: its EXIF and ICC profile, kept with --keep-metadata
    boxes: list[Any] = field(default_factory=list)  # each face's box, for --report


def _process(
    args: argparse.Namespace,
    tag: str,
    prepare: Callable[[Path], Any],
    work: Callable[[list[Any]], list[_Result]],
    progress: _Progress,
) -> int:
    """Shared batch loop: read/prepare each input, run ``work`` on up to --batch-size inputs
    at a time, write atomically, report one line per problem and a summary."""
    from faceanon.errors import OutputExistsError
    from faceanon.io import write_image

    jobs = _jobs(args.inputs, args.output, tag)
    if args.report is not None and args.report.exists() and not args.overwrite:
        raise FaceanonError(f"{args.report}: already exists (--overwrite replaces it)")
    started = time.monotonic()
    report: dict[Path, dict[str, Any]] = {}

    def note(src: Path, status: str, dst: Path | None = None, **more: Any) -> None:
        report[src] = {"input": str(src), "status": status, "output": dst and str(dst), **more}

    counts = {"written": 0, "faces": 0, "skipped": 0, "failed": 0, "existing": 0}
    per_photo: dict[int, int] = {}  # faces in a photo -> photos with that many
    claimed: dict[Path, Path] = {}
    pending: list[tuple[Path, Path, Any]] = []

    def fail(src: Path, exc: BaseException) -> None:
        """One line per failed file, naming it; the run goes on with the others."""
        if isinstance(exc, FaceanonError):
            message = str(exc)
            message = message if message.startswith(str(src)) else f"{src}: {message}"
        else:  # a bug, or a case nobody foresaw: still one line, the traceback on request
            message = f"{src}: unexpected {_first_line(exc)}"
            if args.debug:
                traceback.print_exception(exc, file=sys.stderr)
            else:
                message += " (--debug shows the traceback)"
        _say(f"error: {message}")
        counts["failed"] += 1
        note(src, "failed", error=message)

    def flush() -> None:
        if not pending:
            return
        try:
            results = work([item for _, _, item in pending])
        except Exception as exc:
            batch = list(pending)
            pending.clear()
            if len(batch) == 1:
                fail(batch[0][0], exc)
                return
            for entry in batch:  # one file spoiled the batch: each on its own
                pending.append(entry)
                flush()
            return
        finally:
            progress.end()
        for (src, dst, _), result in zip(pending, results, strict=True):
            if result.faces == 0 and not args.write_faceless:
                _say(f"{src}: no face found; nothing written (--write-faceless copies it)")
                counts["skipped"] += 1
                per_photo[0] = per_photo.get(0, 0) + 1
                note(src, "no face", faces=[])
                continue
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
                    _say(f"{dst}: written meanwhile by another run; kept")
                    counts["existing"] += 1
                    note(src, "already done", dst)
                else:
                    fail(src, exc)
                continue
            except Exception as exc:
                fail(src, exc)
                continue
            counts["written"] += 1
            counts["faces"] += result.faces
            per_photo[result.faces] = per_photo.get(result.faces, 0) + 1
            boxes = [None if b is None else [round(float(v), 1) for v in b] for b in result.boxes]
            note(src, "written", dst, faces=boxes)
            plural = "" if result.faces == 1 else "s"
            _say(f"{src} -> {dst} ({result.faces} face{plural})")
        pending.clear()

    for number, (src, dst) in enumerate(jobs, 1):
        progress.label = f"[{number}/{len(jobs)}] {src.name}"
        progress.show()
        if dst.resolve() in claimed:
            fail(src, FaceanonError(f"its output {dst} is also that of {claimed[dst.resolve()]}"))
            continue
        claimed[dst.resolve()] = src
        if dst.exists() and not args.overwrite:
            if args.skip_existing:
                counts["existing"] += 1
                note(src, "already done", dst)
                continue
            fail(
                src,
                FaceanonError(
                    f"{dst} already exists (--overwrite replaces it, --skip-existing keeps it)"
                ),
            )
            continue
        try:
            pending.append((src, dst, prepare(src)))
        except Exception as exc:
            fail(src, exc)
            continue
        if len(pending) >= args.batch_size:
            flush()
    flush()
    _say(
        f"{tag}: files {len(jobs)}, written {counts['written']}, faces {counts['faces']}, "
        f"skipped (no face) {counts['skipped']}, failed {counts['failed']}, "
        + (f"already done {counts['existing']}, " if args.skip_existing else "")
        + f"{time.monotonic() - started:.1f} s"
        + (f"; photos by faces found: {_histogram(per_photo)}" if per_photo else "")
    )
    if args.report is not None:
        import json

        from faceanon.io import write_atomic

        entries = [report[src] for src, _ in jobs if src in report]
        text = json.dumps({"command": tag, "counts": counts, "files": entries}, indent=1)
        try:
            write_atomic(args.report, text + "\n", overwrite=args.overwrite)
        except FaceanonError as exc:
            _say(f"error: {exc}")
            return EXIT_SOME_FAILED
        _say(f"report: {args.report}")
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _histogram(per_photo: dict[int, int]) -> str:
    """``{0: 1, 1: 5, 3: 1}`` -> ``0 faces x1, 1 face x5, 3 faces x1``."""
    return ", ".join(
        f"{n} face{'' if n == 1 else 's'} x{count}" for n, count in sorted(per_photo.items())
    )


def _read(path: Path, aligned_size: int | None) -> Any:
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


def _finder(args: argparse.Namespace, size: int) -> Any:
    from faceanon.pipeline import FaceFinder

    try:
        return FaceFinder(
            args.detector,
            args.threshold,
            size,
            sideways=not args.upright_only,
            recall=args.recall,
        )
    except ValueError as exc:
        raise FaceanonError(str(exc)) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from faceanon.keys import PassphraseSpec, SecretKey, secret_key_comment, write_key_file

    if args.passphrase:
        spec = PassphraseSpec.new(bits=args.bits)
        phrase = _ask_passphrase(confirm=True)()  # asked now: a mistyped confirmation fails early
        if not phrase.strip():
            raise FaceanonError("empty passphrase refused: choose at least 5 random words")
        if len(phrase) < MIN_PASSPHRASE:
            _say(
                f"warning: a {len(phrase)}-character passphrase can be guessed offline; "
                f"use at least {MIN_PASSPHRASE} characters (5 random words) -- see README, Keys"
            )
        write_key_file(
            args.output,
            spec.to_text(),
            "faceanon passphrase key: the key is derived from this salt and your passphrase.",
        )
    else:
        write_key_file(
            args.output,
            SecretKey.generate(args.bits).to_text(),
            secret_key_comment(args.bits),
        )
    _say(f"key written to {args.output}")
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from faceanon import photos
    from faceanon.pipeline import Face, crop_geometry

    progress = _Progress()
    anonymizer, key = None, None
    size = 256
    if args.method == "keyflip":
        from faceanon.anonymizer import Anonymizer

        if args.key is None:
            raise FaceanonError("--method keyflip needs a key: -k KEYFILE (faceanon keygen)")
        key = _load_key(args.key)
        backbone = _load_backbone(args.backbone, args.model_dir, args.device)
        _say(f"model: {photos.describe_model(backbone)}")
        anonymizer = Anonymizer(
            backbone, args.steps, args.paper_mode, args.inversion, resolve_transform(args)
        )
        size = backbone.image_size
    finder = None if args.aligned else _finder(args, size)

    def prepare(path: Path) -> tuple[Any, list[Face]]:
        picture = _read(path, size if args.aligned else None)
        if finder is None:
            return picture, [Face((0.0, 0.0, size, size), crop_geometry(size))]
        return picture, finder.find(picture.image)

    def work(batch: list[tuple[Any, list[Face]]]) -> list[_Result]:
        outcomes = photos.anonymize(
            [picture.image for picture, _ in batch],
            [faces for _, faces in batch],
            args.method,
            anonymizer=anonymizer,
            key=key,
            batch_size=args.batch_size,
            progress=progress,
            aligned=args.aligned,
        )
        return [
            _Result(o.image, o.metadata, len(o.boxes), picture, o.boxes)
            for o, (picture, _) in zip(outcomes, batch, strict=True)
        ]

    return _process(args, "anonymized", prepare, work, progress)


def cmd_deanonymize(args: argparse.Namespace) -> int:
    from faceanon import photos
    from faceanon.backbones.registry import DEFAULT_BACKBONE, MODELS
    from faceanon.container import FaceRecord, Metadata
    from faceanon.engine import engine_defaults
    from faceanon.errors import MetadataError
    from faceanon.masks import EllipseMask

    key = _load_key(args.key)
    backbones: dict[str, Backbone] = {}
    finders: dict[int, Any] = {}
    progress = _Progress()

    def backbone_for(path: Path, meta: Metadata) -> Backbone:
        # --backbone / --model-dir replace whatever model the metadata names.
        if args.backbone is None and args.model_dir is None:
            name = photos.check_backbone(path, meta, list(MODELS))
        else:
            name = args.backbone or str(meta.backbone)
        if name not in backbones:
            backbones[name] = _load_backbone(name, args.model_dir, args.device)
        loaded = backbones[name].revision
        if meta.revision and loaded and meta.revision != loaded:
            _say(
                f"warning: {path}: made with {name}@{meta.revision[:7]}, undoing with "
                f"{loaded[:7]}: recovery may fail"
            )
        return backbones[name]

    def finder(size: int) -> Any:
        if size not in finders:
            finders[size] = _finder(args, size)
        return finders[size]

    def without_metadata(path: Path, picture: Any) -> Metadata:
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

    def prepare(path: Path) -> tuple[Any, Metadata, Backbone, list[Any]]:
        picture = _read(path, None)
        if picture.faceanon is None:
            meta = without_metadata(path, picture)
        else:
            meta = photos.read_metadata(path, picture.faceanon)
        backbone = backbone_for(path, meta)
        size = backbone.image_size
        meta, geometry = photos.restore_geometry(
            path,
            picture.image,
            meta,
            key,
            size,
            lambda: finder(size),
            detect=picture.faceanon is None,
        )
        return picture, meta, backbone, geometry

    def work(batch: list[tuple[Any, Metadata, Backbone, list[Any]]]) -> list[_Result]:
        outcomes = photos.restore(
            [
                (picture.image, meta, backbone, geometry)
                for picture, meta, backbone, geometry in batch
            ],
            key,
            inversion=args.inversion,
            batch_size=args.batch_size,
            progress=progress,
        )
        return [
            _Result(o.image, None, len(item[3]), item[0], o.boxes)
            for o, item in zip(outcomes, batch, strict=True)
        ]

    return _process(args, "deanonymized", prepare, work, progress)


def cmd_models(args: argparse.Namespace) -> int:
    from faceanon.backbones.registry import DEFAULT_BACKBONE, MODELS, cached_snapshot

    for entry in MODELS.values():
        default = " (default)" if entry.name == DEFAULT_BACKBONE else ""
        if entry.name == "face-prior":
            from faceanon.backbones.face_prior import default_model_file

            file = default_model_file()
            size = f"{file.stat().st_size / 2**20:.1f} MB" if file.is_file() else "MISSING"
            where = f"embedded in the package, nothing to download: {file} ({size})"
        elif entry.hub_id is None:
            where = "built locally, nothing to download"
        else:
            cached = cached_snapshot(entry)
            where = f"cached at {cached}" if cached else "not downloaded yet"
            where = f"{entry.hub_id}@{entry.revision or 'main'}; {where}"
        print(
            f"{entry.name}{default}: {entry.description}\n    {where}\n    licence: {entry.licence}"
        )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the web app (faceanon.web.app) and print its address."""
    from faceanon.backbones.registry import MODELS
    from faceanon.web import missing_extra

    if (why := missing_extra()) is not None:
        raise FaceanonError(why)
    from faceanon.web.app import serve

    if args.backbone is not None and args.backbone not in MODELS:
        raise FaceanonError(f"unknown backbone {args.backbone!r}; known: {', '.join(MODELS)}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(
            f"warning: listening on {args.host}: other machines can reach the page, and"
            " nothing asks them for a password"
        )

    def ready(url: str) -> None:
        print(f"faceanon web app: {url}  (Ctrl-C stops it)", flush=True)

    serve(args.host, args.port, _device(args.device), args.backbone, ready)
    return EXIT_OK


def cmd_fit_prior(args: argparse.Namespace) -> int:
    """Align the crops, fit the face-prior model, write it (faceanon.fit_prior)."""
    from faceanon.fit_prior import align_dataset, build_prior, recipe
    from faceanon.io import write_atomic

    if not args.data_dir.is_dir():
        raise FaceanonError(f"{args.data_dir}: not a folder")
    _say(f"aligning the crops of {args.data_dir} ({args.workers} worker(s))")
    aligned = align_dataset(args.data_dir, args.max_padding, args.workers, args.limit)
    _say(f"fitting d={args.components}, K={args.mixture}, seed {args.seed}")
    prior, report = build_prior(
        aligned,
        args.components,
        args.mixture,
        args.seed,
        args.iterations,
        args.heldout,
        noise_floor=args.noise_floor,
    )
    for line in report.lines():
        _say(line)
    note = recipe(args, report)
    write_atomic(args.output, prior.to_bytes(note), overwrite=args.overwrite)
    size = args.output.stat().st_size / 2**20
    _say(f"model written to {args.output} ({size:.2f} MiB); use it with --model-dir {args.output}")
    return EXIT_OK


def _steps(text: str) -> int:
    from faceanon.limits import MAX_STEPS

    if not text.isdigit() or not 1 <= int(text) <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of steps from 1 to {MAX_STEPS}")
    return int(text)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a confidence between 0 and 1")
    return value


def _inversion(text: str) -> str:
    from faceanon.engine import inversion_name, parse_inversion

    try:
        return inversion_name(parse_inversion(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_transform(args: argparse.Namespace) -> str:
    """--transform as given; else the paper's flip in paper mode (its stripped-metadata undo
    re-finds the mask, and only the flip tolerates a mask a few cells off), else the default."""
    from faceanon.transforms import DEFAULT_TRANSFORM

    if args.transform is not None:
        return str(args.transform)
    return "flip" if args.paper_mode else DEFAULT_TRANSFORM


def add_engine_arguments(p: argparse.ArgumentParser, undo: bool = False) -> None:
    """--steps, --inversion and --transform; deanonymize uses what the file records."""
    from faceanon.engine import BACKBONE_DEFAULTS, DEFAULT_INVERSION, DEFAULT_STEPS
    from faceanon.transforms import DEFAULT_TRANSFORM, TRANSFORMS

    p.add_argument(
        "--transform",
        choices=TRANSFORMS,
        help="what the key does to the face's noise: mix (keyed orthogonal mixing, hides the "
        f"noise magnitudes) or flip (the paper's sign flip); default {DEFAULT_TRANSFORM}, or "
        "flip with --paper-mode" + ("; a file's own is always used" if undo else ""),
    )

    when = " when the file records none (paper mode without metadata)" if undo else ""
    backbones = ", ".join(f"{n} {s} {i}" for n, (s, i) in BACKBONE_DEFAULTS.items())
    p.add_argument(
        "--steps",
        type=_steps,
        help=f"DDIM steps T{when} (default {DEFAULT_STEPS}; {backbones})",
    )
    p.add_argument(
        "--inversion",
        type=_inversion,
        help="ddim, or fixed-point[:K] (K network calls per inversion step, nearly exact "
        + (
            "inversion); default: as recorded in the file"
            if undo
            else f"inversion); default {DEFAULT_INVERSION} ({backbones})"
        ),
    )


def _add_common(
    p: argparse.ArgumentParser, default_backbone: str | None, key_required: bool
) -> None:
    from faceanon.faces.detect import DEFAULT_DETECTOR, DETECTORS

    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="PATH", help="image files or folders (recursive)"
    )
    p.add_argument(
        "-k", "--key", type=Path, required=key_required, help="key file (faceanon keygen)"
    )
    p.add_argument("-o", "--output", type=Path, help="output folder, or file for one input")
    p.add_argument(
        "--backbone",
        default=default_backbone,
        help="registered model name or hub id owner/repo[@revision]"
        + (
            f" (default {default_backbone})"
            if default_backbone
            else "; default: the file's, which must be a registered one"
        ),
    )
    p.add_argument("--model-dir", type=Path, help="local diffusers-format model folder")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR)
    p.add_argument("--threshold", type=_threshold, help="detector confidence, 0-1 (yunet 0.75)")
    p.add_argument(
        "--upright-only", action="store_true", help="do not also search faces lying sideways"
    )
    p.add_argument(
        "--recall",
        choices=("high", "standard"),
        default="high",
        help="high (default): also search the photo framed by its mirror image (faces cut by "
        "the border) and enlarged 2x (faces under ~24 px); standard: the photo as is, 5-7x "
        "faster detection, more faces missed",
    )
    p.add_argument("--paper-mode", action="store_true", help="no per-image nonce (insecure)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1, help="faces per network call")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output exists (resume an interrupted folder run)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument(
        "--report",
        type=Path,
        help="write a JSON file: per input its status, output and the boxes of the faces "
        "covered (review what was found before publishing)",
    )
    p.add_argument(
        "--keep-metadata", action="store_true", help="keep EXIF (GPS too!) and ICC profile"
    )
    p.add_argument(
        "--write-faceless", action="store_true", help="write photos where no face was found"
    )


def build_parser() -> argparse.ArgumentParser:
    from faceanon import __version__
    from faceanon.backbones.registry import DEFAULT_BACKBONE

    parser = argparse.ArgumentParser(
        prog="faceanon", description="Secure, reversible face anonymization with a secret key."
    )
    parser.add_argument("--version", action="version", version=f"faceanon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="create a new secret key file")
    p.add_argument("-o", "--output", type=Path, required=True, help="key file to create")
    p.add_argument("--bits", type=int, choices=(128, 256), default=128)
    p.add_argument("--passphrase", action="store_true", help="derive the key from a passphrase")
    p.set_defaults(run=cmd_keygen)

    p = sub.add_parser("anonymize", help="replace every face, reversibly with the key")
    _add_common(p, DEFAULT_BACKBONE, key_required=False)
    p.add_argument(
        "--method",
        choices=("keyflip", "blur", "pixelate", "solid"),
        default="keyflip",
        help="keyflip (reversible, default) or an irreversible classic method",
    )
    add_engine_arguments(p)
    p.set_defaults(run=cmd_anonymize)

    p = sub.add_parser("deanonymize", help="restore faces with the key")
    _add_common(p, None, key_required=True)
    add_engine_arguments(p, undo=True)
    p.set_defaults(run=cmd_deanonymize)

    p = sub.add_parser(
        "evaluate", help="measure privacy, recovery and wrong-key safety on a face dataset"
    )
    from faceanon.eval.command import add_arguments, evaluate

    add_arguments(p)
    p.set_defaults(run=evaluate)

    p = sub.add_parser(
        "fit-prior", help="fit the embedded face model (face-prior) on a folder of face crops"
    )
    p.add_argument("data_dir", type=Path, help="folder of face crops or zip shards of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file (.npz)")
    p.add_argument("--components", type=int, default=256, help="PCA components d")
    p.add_argument("--mixture", type=int, default=8, help="mixture components K")
    p.add_argument(
        "--noise-floor", type=float, default=0.01, help="least residual variance per coordinate"
    )
    p.add_argument("--iterations", type=int, default=30, help="EM iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.05, help="share held out for the report")
    p.add_argument(
        "--max-padding", type=float, default=0.5, help="drop crops more padded than this"
    )
    p.add_argument("--workers", type=int, default=1, help="processes aligning the crops")
    p.add_argument("--limit", type=int, help="only the first N crops (name order)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.set_defaults(run=cmd_fit_prior)

    p = sub.add_parser("models", help="list the backbones and where they are cached")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("serve", help="a local web page that anonymizes and restores photos")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only)",
    )
    p.add_argument("--port", type=int, default=8765, help="0: any free port (default 8765)")
    p.add_argument(
        "--backbone", default=None, help=f"model selected on the page ({DEFAULT_BACKBONE})"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(run=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        _say("faceanon: error: --batch-size must be at least 1")
        return EXIT_USAGE
    if getattr(args, "skip_existing", False) and getattr(args, "overwrite", False):
        _say("faceanon: error: --skip-existing and --overwrite contradict each other")
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except FaceanonError as exc:
        _say(f"faceanon: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("faceanon: interrupted")
        return 130
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if getattr(args, "debug", False):
            raise
        _say(f"faceanon: error: unexpected {_first_line(exc)} (--debug shows more)")
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
