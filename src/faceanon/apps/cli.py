"""``faceanon``: the command line parsed, the command run, every problem one line. Heavy
imports are lazy (``faceanon --help`` loads no torch)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from faceanon.apps.commands import cmd_fit_net, cmd_fit_prior, cmd_keygen, cmd_models, cmd_serve
from faceanon.apps.options import add_ddim_arguments, whole_number
from faceanon.apps.photo_commands import cmd_anonymize, cmd_deanonymize
from faceanon.apps.terminal import EXIT_USAGE, say
from faceanon.errors import FaceanonError
from faceanon.settings import GUIDES, MAX_GUIDE_SCALE


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a strength in (0, 1]")
    return value


def _guide_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= MAX_GUIDE_SCALE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a scale from 0 to {MAX_GUIDE_SCALE:g}")
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
        "--lossless",
        action="store_true",
        help="videos: lossless FFV1 in Matroska (.mkv, about 10x larger) instead of H.264;"
        " keyflip's H.264 carries the faces' exact latents and restores as FFV1 does",
    )
    p.add_argument("--lossy", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument(
        "--crf",
        type=whole_number("an H.264 CRF", 0, 51),
        default=18,
        help="videos written as H.264 (the default; restores into .mp4/.mov/.m4v names): quality"
        " 0-51, lower is better and larger (default 18, visually near-lossless)",
    )
    p.add_argument("--paper-mode", action="store_true", help="no per-image nonce (insecure)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="faces per network call (default: 1 for photos, 8 for videos: the faces of 8"
        " frames together, about 2x faster with the embedded model)",
    )
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
        "--quality",
        type=whole_number("a JPEG or WebP quality", 1, 100),
        default=95,
        help="JPEG and WebP outputs (-o NAME.jpg, NAME.webp): quality 1-100 (default 95);"
        " keyflip JPEGs and WebPs carry their faces' exact latents, so they restore about as"
        " well as PNGs",
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
        choices=("keyflip", "hide", "hydro", "blur", "pixelate", "solid"),
        default="keyflip",
        help="keyflip (reversible, default); hide (photos: reversible, a new face for people"
        " that the --guide recognizer still matches to the person, after Diff-Privacy); hydro"
        " (irreversible: keyflip with a throw-away key, then re-noised and denoised, after"
        " HYDRO); or a classic method",
    )
    p.add_argument(
        "--guide",
        choices=GUIDES,
        default="sface",
        help="hide: the recognizer that keeps matching the person (default sface; arcface"
        " needs faceanon[arcface], non-commercial)",
    )
    p.add_argument(
        "--guide-scale",
        type=_guide_scale,
        default=None,
        metavar="S",
        help="hide: identity guidance strength, 0-1000 (default 40; 0: keyflip's face)",
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
    if (batch := getattr(args, "batch_size", None)) is not None and batch < 1:
        say("faceanon: error: --batch-size must be at least 1")
        return EXIT_USAGE
    if getattr(args, "workers", 1) < 1:
        say("faceanon: error: --workers must be at least 1")
        return EXIT_USAGE
    if getattr(args, "skip_existing", False) and getattr(args, "overwrite", False):
        say("faceanon: error: --skip-existing and --overwrite contradict each other")
        return EXIT_USAGE
    try:
        with _stop_on_signals():
            code: int = args.run(args)
    except FaceanonError as exc:
        say(f"faceanon: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("faceanon: interrupted")
        return 130
    except Stopped as exc:
        import signal

        say(f"faceanon: stopped by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if getattr(args, "debug", False):
            raise
        from faceanon.errors import first_line

        say(f"faceanon: error: unexpected {first_line(exc)} (--debug shows more)")
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
