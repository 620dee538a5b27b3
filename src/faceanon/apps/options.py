"""Command-line options that ``faceanon`` and ``faceanon evaluate`` share (argparse types and
option groups; the commands' own parsers are in ``faceanon.apps.cli`` and
``faceanon.apps.evaluate``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faceanon.settings import Settings


def whole_number(what: str, low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, else "'x' is not {what} from
    {low} to {high}"."""

    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} from {low} to {high}")
        return int(text)

    return parse


def inversion_type(text: str) -> str:
    from faceanon.diffusion.ddim_settings import inversion_name, parse_inversion

    try:
        return inversion_name(parse_inversion(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ddim_arguments(p: argparse.ArgumentParser, undo: bool = False) -> None:
    """--steps, --inversion and --transform; deanonymize uses what the file records."""
    from faceanon.diffusion.ddim_settings import BACKBONE_DEFAULTS, DEFAULT_INVERSION, DEFAULT_STEPS
    from faceanon.limits import MAX_STEPS
    from faceanon.secure.transforms import DEFAULT_TRANSFORM, TRANSFORMS

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
        type=whole_number("a number of steps", 1, MAX_STEPS),
        help=f"DDIM steps T{when} (default {DEFAULT_STEPS}; {backbones})",
    )
    p.add_argument(
        "--inversion",
        type=inversion_type,
        help="ddim, or fixed-point[:K] (K network calls per inversion step, nearly exact "
        + (
            "inversion); default: as recorded in the file"
            if undo
            else f"inversion); default {DEFAULT_INVERSION} ({backbones})"
        ),
    )


def settings_from(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> Settings:
    """The typed settings the parsed options say: every :class:`faceanon.Settings` field that
    the command has an option of the same name for (but ``exclude``), checked once more."""
    from dataclasses import fields

    from faceanon.settings import Settings

    names = [f.name for f in fields(Settings) if f.name not in exclude and hasattr(args, f.name)]
    return Settings(**{name: getattr(args, name) for name in names})
