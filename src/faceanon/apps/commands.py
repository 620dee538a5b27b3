"""``faceanon keygen``, ``models``, ``serve``, ``fit-prior`` and ``fit-net``: parse results in,
the library called, lines printed."""

from __future__ import annotations

import argparse

from faceanon.apps.terminal import EXIT_OK, MIN_PASSPHRASE, ask_passphrase, say
from faceanon.errors import FaceanonError


def cmd_keygen(args: argparse.Namespace) -> int:
    from faceanon.secure.keys import PassphraseSpec, SecretKey, secret_key_comment, write_key_file

    if args.passphrase:
        spec = PassphraseSpec.new(bits=args.bits)
        phrase = ask_passphrase(confirm=True)()  # asked now: a mistyped confirmation fails early
        if not phrase.strip():
            raise FaceanonError("empty passphrase refused: choose at least 5 random words")
        if len(phrase) < MIN_PASSPHRASE:
            say(
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
    say(f"key written to {args.output}")
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
        say(
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
    say(f"aligning the crops of {args.data_dir} ({args.workers} worker(s))")
    aligned = align_dataset(args.data_dir, args.max_padding, args.workers, args.limit)
    say(f"fitting d={args.components}, K={args.mixture}, seed {args.seed}")
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
        say(line)
    note = recipe(args, report)
    write_atomic(args.output, prior.to_bytes(note), overwrite=args.overwrite)
    size = args.output.stat().st_size / 2**20
    say(f"model written to {args.output} ({size:.2f} MiB); use it with --model-dir {args.output}")
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
        args.data_dir, args.aligned_cache, args.max_padding, args.workers, args.limit, say
    )
    fit, held = split(len(latents), args.heldout, args.seed)
    arch = Architecture(width=args.width, blocks=args.blocks)
    say(
        f"training on {len(fit)} crops (x2 mirrored), {len(held)} held out: width {args.width},"
        f" {args.blocks} blocks, {args.steps} steps, batch {args.batch}, seed {args.seed}"
    )

    def on_log(step: int, loss: float, heldout: float, seconds: float) -> None:
        say(f"step {step}: loss {loss:.5f}, held-out {heldout:.5f}, {seconds:.0f} s")

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
    say(f"model written to {args.output} ({size:.2f} MiB); use it with --model-dir {args.output}")
    return EXIT_OK
