"""``faceanon``: parse, call the library, print one line per problem. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.keys import SecretKey

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "FACEANON_PASSPHRASE"


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
    from faceanon.keys import read_key_file

    return read_key_file(path, _ask_passphrase())


def _load_backbone(name: str, model_dir: Path | None, device: str) -> Backbone:
    import torch

    from faceanon.backbones.registry import load_backbone

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_backbone(name, model_dir=model_dir, device=device)


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.live:
            print(f"\r{self.label}: step {done}/{total}", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _output_paths(inputs: Sequence[Path], out: Path | None, tag: str) -> list[Path]:
    from faceanon.io import JPEG_SUFFIXES, PNG_SUFFIXES

    if out is not None and out.suffix.lower() in PNG_SUFFIXES + JPEG_SUFFIXES and not out.is_dir():
        if len(inputs) != 1:
            raise FaceanonError(
                f"-o {out}: one output file for {len(inputs)} inputs; give a folder"
            )
        return [out]

    def name(p: Path) -> str:
        stem = p.stem.removesuffix("_anonymized") if tag == "deanonymized" else p.stem
        return f"{stem}_{tag}.png"

    return [(out if out is not None else p.parent) / name(p) for p in inputs]


def _check_outputs(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in sources:
            raise FaceanonError(f"{out}: output would overwrite an input; choose another -o")
        if out.suffix.lower() in (".jpg", ".jpeg"):
            _say(f"warning: {out}: JPEG is lossy, de-anonymization will be less accurate (use PNG)")


def _process(
    args: argparse.Namespace,
    tag: str,
    work: Callable[[list[tuple[Path, Any]]], list[tuple[Any, str | None]]],
    prepare: Callable[[Path], Any],
) -> int:
    """Shared batch loop: read/prepare each input, run ``work`` in batches, write, summarise."""
    from faceanon.io import write_image

    outputs = _output_paths(args.inputs, args.output, tag)
    _check_outputs(args.inputs, outputs)
    started, done, failed = time.monotonic(), 0, 0
    pending: list[tuple[Path, Path, Any]] = []

    def flush() -> None:
        nonlocal done, failed
        if not pending:
            return
        try:
            results = work([(src, item) for src, _, item in pending])
        except FaceanonError as exc:
            _say(f"error: {exc}")
            failed += len(pending)
            pending.clear()
            return
        for (src, dst, _), (image, meta) in zip(pending, results, strict=True):
            try:
                write_image(dst, image, meta, overwrite=args.overwrite)
                done += 1
                _say(f"{src} -> {dst}")
            except FaceanonError as exc:
                _say(f"error: {exc}")
                failed += 1
        pending.clear()

    for src, dst in zip(args.inputs, outputs, strict=True):
        if dst.exists() and not args.overwrite:
            _say(f"error: {dst}: already exists (pass --overwrite to replace it)")
            failed += 1
            continue
        try:
            pending.append((src, dst, prepare(src)))
        except FaceanonError as exc:
            _say(f"error: {exc}")
            failed += 1
            continue
        if len(pending) >= args.batch_size:
            flush()
    flush()
    elapsed = time.monotonic() - started
    _say(f"{tag}: {done} written, {failed} failed, {elapsed:.1f} s")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _read_crop(path: Path, size: int) -> Any:
    from faceanon.errors import ImageError
    from faceanon.io import read_image

    image, meta = read_image(path)
    if image.shape[:2] != (size, size):
        raise ImageError(
            f"{path}: wrong size {image.shape[1]}x{image.shape[0]}; "
            f"--aligned expects a {size}x{size} aligned face crop"
        )
    return image, meta


def cmd_keygen(args: argparse.Namespace) -> int:
    from faceanon.keys import PassphraseSpec, SecretKey, write_key_file

    if args.passphrase:
        spec = PassphraseSpec.new(bits=args.bits)
        _ask_passphrase(confirm=True)()  # asked now so a mistyped confirmation fails early
        write_key_file(
            args.output,
            spec.to_text(),
            "faceanon passphrase key: the key is derived from this salt and your passphrase.",
        )
    else:
        write_key_file(
            args.output,
            SecretKey.generate(args.bits).to_text(),
            f"faceanon secret key ({args.bits}-bit). Anyone holding it can undo the "
            "anonymization: keep it private.",
        )
    _say(f"key written to {args.output}")
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from faceanon.anonymizer import Anonymizer
    from faceanon.container import FaceRecord, Metadata

    key = _load_key(args.key)
    backbone = _load_backbone(args.backbone, args.model_dir, args.device)
    anonymizer = Anonymizer(backbone, steps=args.steps, paper_mode=args.paper_mode)
    progress = _Progress("anonymize")

    def work(batch: list[tuple[Path, Any]]) -> list[tuple[Any, str | None]]:
        faces = anonymizer.anonymize_batch([image for _, (image, _) in batch], key, None, progress)
        progress.end()
        return [
            (
                face.image,
                Metadata(
                    "keyflip",
                    face.backbone,
                    face.revision,
                    face.steps,
                    (FaceRecord(face.nonce, face.mask),),
                ).to_json(),
            )
            for face in faces
        ]

    return _process(args, "anonymized", work, lambda p: _read_crop(p, backbone.image_size))


def cmd_deanonymize(args: argparse.Namespace) -> int:
    from faceanon.anonymizer import Anonymizer
    from faceanon.container import FaceRecord, Metadata
    from faceanon.errors import MetadataError
    from faceanon.masks import EllipseMask

    key = _load_key(args.key)
    backbones: dict[str, Backbone] = {}
    progress = _Progress("deanonymize")

    def backbone_name(meta: Metadata) -> str:
        # --model-dir replaces whatever model the metadata names.
        return meta.backbone if args.model_dir is None else args.backbone

    def prepare(path: Path) -> tuple[Any, Metadata]:
        from faceanon.io import read_image

        image, text = read_image(path)
        if text is None:
            if not args.paper_mode:
                raise MetadataError(
                    f"{path}: no faceanon metadata (stripped or re-saved?); an image anonymized"
                    " in paper mode can be undone with --paper-mode --backbone NAME --steps T"
                )
            meta = Metadata(
                "keyflip", args.backbone, None, args.steps, (FaceRecord(None, EllipseMask()),)
            )
        else:
            try:
                meta = Metadata.from_json(text)
            except MetadataError as exc:
                raise MetadataError(f"{path}: {exc}") from None
        name = backbone_name(meta)
        if name not in backbones:
            backbones[name] = _load_backbone(name, args.model_dir, args.device)
        loaded = backbones[name].revision
        if meta.revision and loaded and meta.revision != loaded:
            _say(
                f"warning: {path}: made with {name}@{meta.revision[:7]}, undoing with "
                f"{loaded[:7]}: recovery may fail"
            )
        size = backbones[name].image_size
        if image.shape[:2] != (size, size):
            raise MetadataError(f"{path}: size {image.shape[1]}x{image.shape[0]} is not {size}")
        return image, meta

    def work(batch: list[tuple[Path, Any]]) -> list[tuple[Any, str | None]]:
        # Files may differ in backbone and steps: one network batch per (backbone, steps).
        results: list[tuple[Any, str | None]] = [(None, None)] * len(batch)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (_, (_, meta)) in enumerate(batch):
            groups.setdefault((backbone_name(meta), meta.steps), []).append(i)
        for (name, steps), indices in groups.items():
            faces = [batch[i][1][1].faces[0] for i in indices]
            restored = Anonymizer(backbones[name], steps=steps).deanonymize_batch(
                [batch[i][1][0] for i in indices],
                key,
                [face.mask for face in faces],
                [face.nonce for face in faces],
                progress,
            )
            progress.end()
            for i, image in zip(indices, restored, strict=True):
                results[i] = (image, None)
        return results

    return _process(args, "deanonymized", work, prepare)


def cmd_models(args: argparse.Namespace) -> int:
    from faceanon.backbones.registry import DEFAULT_BACKBONE, MODELS, cached_snapshot

    for entry in MODELS.values():
        default = " (default)" if entry.name == DEFAULT_BACKBONE else ""
        if entry.hub_id is None:
            where = "built locally, nothing to download"
        else:
            cached = cached_snapshot(entry)
            where = f"cached at {cached}" if cached else "not downloaded yet"
            where = f"{entry.hub_id}@{entry.revision or 'main'}; {where}"
        print(
            f"{entry.name}{default}: {entry.description}\n    {where}\n    licence: {entry.licence}"
        )
    return EXIT_OK


def _add_common(p: argparse.ArgumentParser, default_backbone: str) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files")
    p.add_argument("-k", "--key", type=Path, required=True, help="key file (faceanon keygen)")
    p.add_argument("-o", "--output", type=Path, help="output folder, or file for one input")
    p.add_argument("--backbone", default=default_backbone, help="registered model name")
    p.add_argument("--model-dir", type=Path, help="local diffusers-format model folder")
    p.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are aligned 256x256 face crops (the only mode for now)",
    )
    p.add_argument("--paper-mode", action="store_true", help="no per-image nonce (insecure)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=1, help="faces per network call")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


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

    p = sub.add_parser("anonymize", help="replace faces, reversibly with the key")
    _add_common(p, DEFAULT_BACKBONE)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps T (default 50)")
    p.set_defaults(run=cmd_anonymize)

    p = sub.add_parser("deanonymize", help="restore faces with the key")
    _add_common(p, DEFAULT_BACKBONE)
    p.add_argument("--steps", type=int, default=50, help="with --paper-mode and no metadata")
    p.set_defaults(run=cmd_deanonymize)

    p = sub.add_parser("models", help="list the backbones and where they are cached")
    p.set_defaults(run=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        _say("faceanon: error: --batch-size must be at least 1")
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except FaceanonError as exc:
        _say(f"faceanon: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("faceanon: interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
