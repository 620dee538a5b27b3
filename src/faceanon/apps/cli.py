"""``faceanon``: parse, call the library, print one line per problem. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.apps.options import add_ddim_arguments
from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.secure.keys import SecretKey
    from faceanon.settings import OutputPolicy, Settings

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "FACEANON_PASSPHRASE"
MIN_PASSPHRASE = 20  # shorter ones get a warning at keygen (README, Keys)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


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
    from faceanon.secure.keys import read_key_file

    return read_key_file(path, _ask_passphrase())


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


def _settings(args: argparse.Namespace) -> Settings:
    """The typed settings the command's options say (checked there once more)."""
    from faceanon.settings import Settings

    return Settings(
        method=getattr(args, "method", "keyflip"),
        backbone=args.backbone,
        model_dir=args.model_dir,
        steps=args.steps,
        inversion=args.inversion,
        transform=args.transform,
        paper_mode=args.paper_mode,
        detector=args.detector,
        threshold=args.threshold,
        recall=args.recall,
        upright_only=args.upright_only,
        mask=args.mask,
        parser_model=args.parser_model,
        aligned=args.aligned,
        device=args.device,
        strength=getattr(args, "strength", 0.6),
        repeats=getattr(args, "repeats", 1),
    )


def _policy(args: argparse.Namespace) -> OutputPolicy:
    from faceanon.settings import OutputPolicy

    return OutputPolicy(args.overwrite, args.skip_existing, args.write_faceless, args.keep_metadata)


def _process(args: argparse.Namespace, tag: str, make_job: Callable[[Any], Any]) -> int:
    """The photos: every input's output planned and checked, the job run on this machine or
    on Ray (``--engine``), one line per file and a summary printed, ``--report`` written."""
    from faceanon.folders.jobs import run
    from faceanon.folders.plan import Tally, plan
    from faceanon.settings import Engine

    engine = Engine(args.engine, args.batch_size, args.workers, args.address, args.gpus_per_worker)
    entries, notes = plan(args.inputs, args.output, tag)
    for note in notes:
        _say(note)
    if args.report is not None and args.report.exists() and not args.overwrite:
        raise FaceanonError(f"{args.report}: already exists (--overwrite replaces it)")
    started = time.monotonic()
    tally = Tally(tag)
    progress = _Progress()

    def label(number: int, total: int, entry: tuple[Path, Path]) -> None:
        progress.label = f"[{number}/{total}] {entry[0].name}"
        progress.show()

    policy = _policy(args)
    for row in run(make_job, entries, policy, engine, _say, label, progress):
        progress.end()
        for line in row.lines:
            _say(line)
        tally.add(row)
    _say(tally.summary(len(entries), time.monotonic() - started, args.skip_existing))
    if args.report is not None:
        from faceanon.media.io import write_atomic

        try:
            write_atomic(args.report, tally.report(entries) + "\n", overwrite=args.overwrite)
        except FaceanonError as exc:
            _say(f"error: {exc}")
            return EXIT_SOME_FAILED
        _say(f"report: {args.report}")
    return EXIT_SOME_FAILED if tally.counts["failed"] else EXIT_OK


def rate(fps: float) -> str:
    """Frames per second, or seconds per frame below one frame a second (``0.0 fps`` says
    nothing)."""
    if fps >= 1 or fps <= 0:
        return f"{fps:.1f} fps"
    return f"{1 / fps:.1f} s per frame"


class _VideoProgress:
    """``video.mp4: frame 120/250, 118 faces, 4.1 fps, ETA 31 s`` on a terminal."""

    def __init__(self, progress: _Progress, name: str) -> None:
        self.progress, self.name, self.started = progress, name, time.monotonic()

    def __call__(self, frames: int, total: int | None, faces: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        fps = frames / elapsed
        eta = f", ETA {(total - frames) / fps:.0f} s" if total and fps > 0 else ""
        of = f"/{total}" if total else ""
        self.progress.label = f"{self.name}: frame {frames}{of}, {faces} faces, {rate(fps)}{eta}"
        self.progress.show()


def _process_videos(
    args: argparse.Namespace, tag: str, pairs: list[tuple[Path, Path]], run: Callable[..., Any]
) -> int:
    """One line per video and a summary; ``run(src, dst, progress)`` does the work."""
    progress = _Progress()
    counts = {"written": 0, "failed": 0, "frames": 0}
    started = time.monotonic()
    for src, dst in pairs:
        if dst.exists() and not args.overwrite:
            if args.skip_existing:
                continue
            _say(
                f"error: {src}: {dst} already exists (--overwrite replaces it,"
                " --skip-existing keeps it)"
            )
            counts["failed"] += 1
            continue
        try:
            summary = run(src, dst, _VideoProgress(progress, src.name))
        except FaceanonError as exc:
            progress.end()
            _say(f"error: {exc}")
            counts["failed"] += 1
            continue
        progress.end()
        for note in summary.notes:
            _say(note)
        if not summary.written:
            _say(
                f"{src}: no face found in {summary.frames} frames; nothing written"
                " (--write-faceless writes it)"
            )
            continue
        if summary.broke:
            _say(f"warning: {src}: {summary.broke}; the frames before it were written")
        filled = f", {summary.filled} filled between detections" if summary.filled else ""
        if summary.recovered:
            filled += f", {summary.recovered} found by the turned search"
        if summary.held:
            filled += f", {summary.held} held at track ends"
        tracks = f" in {summary.tracks} tracks" if tag == "anonymized" else ""
        _say(
            f"{src} -> {dst} ({summary.frames} frames, {summary.faces} face-frames{tracks}"
            f"{filled}, {rate(summary.frames / max(summary.seconds, 1e-6))})"
        )
        counts["written"] += 1
        counts["frames"] += summary.frames
    _say(
        f"{tag} videos: files {len(pairs)}, written {counts['written']}, failed"
        f" {counts['failed']}, frames {counts['frames']}, {time.monotonic() - started:.1f} s"
    )
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _photos_and_videos(
    args: argparse.Namespace,
    tag: str,
    make_job: Callable[[Any], Any],
    video_runner: Callable[[], Callable[..., Any]],
) -> int:
    """The videos among the inputs (``video_runner()`` makes their ``run(src, dst, progress)``,
    only if there are any), then the photos."""
    from faceanon.folders.plan import plan_videos

    method = getattr(args, "method", "keyflip")
    videos, rest = plan_videos(args.inputs, args.output, tag, method)
    code = EXIT_OK
    if videos:
        code = _process_videos(args, tag, videos, video_runner())
        if not rest:
            return code
        args.inputs = rest
    return max(code, _process(args, tag, make_job))


def _video_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both video commands pass on."""
    return {"batch_size": args.batch_size, "audio": not args.no_audio, "overwrite": args.overwrite}


def cmd_anonymize(args: argparse.Namespace) -> int:
    from functools import partial

    from faceanon.folders.jobs import AnonymizeJob

    if args.method == "keyflip" and args.key is None:
        raise FaceanonError("--method keyflip needs a key: -k KEYFILE (faceanon keygen)")
    settings = _settings(args)
    key = _load_key(args.key) if args.method == "keyflip" else None

    def video_runner() -> Callable[..., Any]:
        from faceanon.loading import tools
        from faceanon.media import video

        made = tools(settings, key)
        if made.model:
            _say(f"model: {made.model}")
        return lambda src, dst, progress: video.anonymize_video(
            src,
            dst,
            args.method,
            made.finder,
            anonymizer=made.anonymizer,
            key=key,
            write_faceless=args.write_faceless,
            lossy=args.lossy,
            progress=progress,
            **_video_options(args),
        )

    make_job = partial(
        AnonymizeJob, settings, _policy(args), key, batch_size=args.batch_size, debug=args.debug
    )
    return _photos_and_videos(args, "anonymized", make_job, video_runner)


def cmd_deanonymize(args: argparse.Namespace) -> int:
    from functools import partial

    from faceanon.folders.jobs import DeanonymizeJob

    settings, policy = _settings(args), _policy(args)
    key = _load_key(args.key)
    make_job = partial(
        DeanonymizeJob, settings, policy, key, batch_size=args.batch_size, debug=args.debug
    )

    def video_runner() -> Callable[..., Any]:
        from faceanon.media import video

        job = make_job(None)

        def backbone_for(path: Path, meta: Any) -> Any:
            backbone = job.backbone_for(path, meta)
            for note in job.notes:  # the model line the first time, revision warnings
                _say(note)
            job.notes.clear()
            return backbone

        return lambda src, dst, progress: video.deanonymize_video(
            src, dst, key, backbone_for, job.finder, progress=progress, **_video_options(args)
        )

    return _photos_and_videos(args, "deanonymized", make_job, video_runner)


def cmd_keygen(args: argparse.Namespace) -> int:
    from faceanon.secure.keys import PassphraseSpec, SecretKey, secret_key_comment, write_key_file

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


def cmd_models(args: argparse.Namespace) -> int:
    from faceanon.backbones.registry import DEFAULT_BACKBONE, MODELS, cached_snapshot, hub_cache

    for entry in MODELS.values():
        default = " (default)" if entry.name == DEFAULT_BACKBONE else ""
        if entry.name in ("face-prior", "face-net"):
            from faceanon.backbones import face_net, face_prior

            module = face_prior if entry.name == "face-prior" else face_net
            file = module.default_model_file()
            size = f"{file.stat().st_size / 2**20:.1f} MB" if file.is_file() else "MISSING"
            where = f"embedded in the package, nothing to download: {file} ({size})"
        elif entry.hub_id is None:
            where = "built locally, nothing to download"
        else:
            cached = cached_snapshot(entry)
            where = (
                f"cached at {cached}"
                if cached
                else f"not downloaded yet; first use caches it under {hub_cache()}"
            )
            where = f"{entry.hub_id}@{entry.revision or 'main'}; {where}"
        files = f"\n    files: {', '.join(entry.files)}" if entry.files else ""
        print(
            f"{entry.name}{default}: {entry.description}\n    {where}{files}\n"
            f"    licence: {entry.licence}"
        )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the web app (faceanon.apps.web.app) and print its address."""
    from faceanon.apps.web import missing_extra
    from faceanon.backbones.registry import MODELS
    from faceanon.loading import resolve_device

    if (why := missing_extra()) is not None:
        raise FaceanonError(why)
    from faceanon.apps.web.app import serve

    if args.backbone is not None and args.backbone not in MODELS:
        raise FaceanonError(f"unknown backbone {args.backbone!r}; known: {', '.join(MODELS)}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(
            f"warning: listening on {args.host}: other machines can reach the page, and"
            " nothing asks them for a password"
        )

    def ready(url: str) -> None:
        print(f"faceanon web app: {url}  (Ctrl-C stops it)", flush=True)

    serve(args.host, args.port, resolve_device(args.device), args.backbone, ready)
    return EXIT_OK


def cmd_fit_prior(args: argparse.Namespace) -> int:
    """Align the crops, fit the face-prior model, write it (faceanon.training.fit_prior)."""
    from faceanon.media.io import write_atomic
    from faceanon.training.fit_prior import align_dataset, build_prior, recipe

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


def cmd_fit_net(args: argparse.Namespace) -> int:
    """Align the crops, train the face-net model, write it with its loss curve and sample grid
    (faceanon.training.fit_net)."""
    from faceanon.backbones.face_net import Architecture
    from faceanon.media.io import write_atomic
    from faceanon.training.fit_net import (
        aligned_latents,
        png_bytes,
        recipe,
        sample_grid,
        save_curve,
        train,
    )
    from faceanon.training.fit_prior import split

    if args.output.exists() and not args.overwrite:
        raise FaceanonError(f"{args.output}: exists (--overwrite replaces it)")
    latents, _ = aligned_latents(
        args.data_dir, args.aligned_cache, args.max_padding, args.workers, args.limit, _say
    )
    fit, held = split(len(latents), args.heldout, args.seed)
    arch = Architecture(width=args.width, blocks=args.blocks)
    _say(
        f"training on {len(fit)} crops (x2 mirrored), {len(held)} held out: width {args.width},"
        f" {args.blocks} blocks, {args.steps} steps, batch {args.batch}, seed {args.seed}"
    )

    def on_log(step: int, loss: float, heldout: float, seconds: float) -> None:
        _say(f"step {step}: loss {loss:.5f}, held-out {heldout:.5f}, {seconds:.0f} s")

    model, log = train(
        latents[fit],
        latents[held],
        arch,
        args.steps,
        tuple(args.floor),
        args.minutes,
        args.batch,
        seed=args.seed,
        on_log=on_log,
    )
    model.note = recipe(args, len(fit), len(held), log)
    write_atomic(args.output, model.to_bytes(), overwrite=args.overwrite)
    stem = args.output.with_suffix("")
    save_curve(log, stem.with_name(stem.name + "-loss.png"))
    write_atomic(stem.with_name(stem.name + "-samples.png"), png_bytes(sample_grid(model)))
    size = args.output.stat().st_size / 2**20
    _say(f"model written to {args.output} ({size:.2f} MiB); use it with --model-dir {args.output}")
    return EXIT_OK


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a strength in (0, 1]")
    return value


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a confidence between 0 and 1")
    return value


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
    p.add_argument(
        "--model-dir",
        type=Path,
        help="local model: a diffusers folder, a face-prior .npz, a face-net .safetensors, or"
        " for the paper's models (ldm-ffhq-256, ffhq-controlnet-*) the folder of their files"
        " (faceanon models)",
    )
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
    p.add_argument(
        "--mask",
        choices=("landmarks", "parser", "ellipse"),
        help="anonymize photos: the face region, from 68 landmarks (default), a BiSeNet face"
        " parser (occluders such as hands stay as they were; downloads the model once), or a"
        " fixed ellipse in the aligned face (--aligned crops always use the ellipse)",
    )
    p.add_argument(
        "--parser-model",
        default="resnet34",
        help="--mask parser: resnet34 (default, the authors'), resnet18, or an ONNX file",
    )
    p.add_argument(
        "--no-audio", action="store_true", help="videos: drop the sound (default: copied as is)"
    )
    p.add_argument(
        "--lossy",
        action="store_true",
        help="videos, keyflip: H.264 instead of lossless FFV1 (smaller; the restore is less"
        " accurate)",
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
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process; ray: Ray Data workers, on this machine or a "
        "cluster (pip install 'faceanon[ray]')",
    )
    p.add_argument(
        "--address",
        help="ray: the cluster to join (auto, ray://host:10001); default: a new local instance",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="ray: workers, one CPU thread each (default 2)"
    )
    p.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per worker (default 0)"
    )


def _fit_options(p: argparse.ArgumentParser, max_padding: float) -> None:
    """What fit-prior and fit-net share: the split, the crops kept, the alignment, the file."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.05, help="share held out")
    p.add_argument(
        "--max-padding",
        type=float,
        default=max_padding,
        help=f"drop crops more padded than this (default {max_padding})",
    )
    p.add_argument("--workers", type=int, default=1, help="processes aligning the crops")
    p.add_argument("--limit", type=int, help="only the first N crops (name order)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")


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
        choices=("keyflip", "hydro", "blur", "pixelate", "solid"),
        default="keyflip",
        help="keyflip (reversible, default); hydro (irreversible: keyflip with a throw-away key,"
        " then re-noised and denoised, after HYDRO); or a classic method",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=0.6,
        help="hydro: how far the face is re-noised, a fraction of the steps (default 0.6)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="1-10",
        help="hydro: re-noise rounds (default 1)",
    )
    add_ddim_arguments(p)
    p.set_defaults(run=cmd_anonymize)

    p = sub.add_parser("deanonymize", help="restore faces with the key")
    _add_common(p, None, key_required=True)
    add_ddim_arguments(p, undo=True)
    p.set_defaults(run=cmd_deanonymize)

    p = sub.add_parser(
        "evaluate", help="measure privacy, recovery and wrong-key safety on a face dataset"
    )
    from faceanon.apps.evaluate import add_arguments, evaluate

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
    _fit_options(p, max_padding=0.5)
    p.set_defaults(run=cmd_fit_prior)

    p = sub.add_parser(
        "fit-net", help="train the embedded face model with a learned denoiser (face-net)"
    )
    p.add_argument("data_dir", type=Path, help="folder of face crops or zip shards of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file (.safetensors)")
    p.add_argument(
        "--aligned-cache",
        type=Path,
        help="a .npz of the aligned crops: read if it exists, else written",
    )
    p.add_argument("--steps", type=int, default=20000, help="training steps")
    p.add_argument(
        "--minutes",
        type=float,
        help="stop after this much time (the schedule still ends at --steps)",
    )
    p.add_argument("--batch", type=int, default=512, help="crops per step")
    p.add_argument(
        "--floor",
        type=float,
        nargs=2,
        default=(1e-2, 1e-3),
        metavar=("LUMA", "CHROMA"),
        help="variance of the white noise the model adds to faces (luminance, chroma)",
    )
    p.add_argument("--width", type=int, default=768, help="width of the network")
    p.add_argument("--blocks", type=int, default=4, help="residual blocks")
    _fit_options(p, max_padding=0.7)
    p.set_defaults(run=cmd_fit_net)

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


class Stopped(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP): raised like Ctrl-C's
    KeyboardInterrupt, so the temporary files of unfinished outputs are removed on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {s: signal.signal(s, _raise_stopped) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        _say("faceanon: error: --batch-size must be at least 1")
        return EXIT_USAGE
    if getattr(args, "workers", 1) < 1:
        _say("faceanon: error: --workers must be at least 1")
        return EXIT_USAGE
    if getattr(args, "skip_existing", False) and getattr(args, "overwrite", False):
        _say("faceanon: error: --skip-existing and --overwrite contradict each other")
        return EXIT_USAGE
    try:
        with _stop_on_signals():
            code: int = args.run(args)
    except FaceanonError as exc:
        _say(f"faceanon: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("faceanon: interrupted")
        return 130
    except Stopped as exc:
        import signal

        _say(f"faceanon: stopped by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if getattr(args, "debug", False):
            raise
        from faceanon.errors import first_line

        _say(f"faceanon: error: unexpected {first_line(exc)} (--debug shows more)")
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
