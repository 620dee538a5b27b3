"""DDIM settings (steps T, inversion) as the command line and the metadata name them (no
torch import here).

``inversion``: ``ddim`` (plain DDIM inversion) or ``fixed-point:K`` (K fixed-point iterations
per inversion step, see :func:`faceanon.diffusion.loops.invert`); internally the number K
("refine").
"""

from __future__ import annotations

# Chosen from docs/benchmarks.md: T = 15 with two fixed-point iterations restores better than
# the paper's T = 50 with plain DDIM (closed-form recovery RMSE 2.9e-2 vs 5.0e-2) from 46
# network calls instead of 100. `--steps 50 --inversion ddim` is the paper's setting.
DEFAULT_STEPS = 15
DEFAULT_INVERSION = "fixed-point:2"
# Backbones whose calls are cheap get more: face-prior (an eps call is milliseconds) restores
# far better at T = 50, fixed-point:4 than at T = 15, fixed-point:2 (latent RMSE 0.013 vs 0.11),
# in about two seconds per face and direction on a 2-core CPU, engine only (docs/benchmarks.md).
# face-net: the same (docs/benchmarks.md "face-net").
BACKBONE_DEFAULTS = {"face-prior": (50, "fixed-point:4"), "face-net": (50, "fixed-point:4")}
FIXED_POINT_DEFAULT = 2  # K of a bare "fixed-point"
MAX_REFINE = 8  # bounds the work an (untrusted) file's metadata can ask for


def parse_inversion(text: str) -> int:
    """``ddim`` -> 0, ``fixed-point`` -> the default K, ``fixed-point:K`` -> K (1..8)."""
    if text == "ddim":
        return 0
    kind, _, count = text.partition(":")
    if kind == "fixed-point":
        if not count:
            return FIXED_POINT_DEFAULT
        if count.isdigit() and 1 <= int(count) <= MAX_REFINE:
            return int(count)
    raise ValueError(
        f"inversion {text!r}: expected ddim, fixed-point or fixed-point:K with K from 1 to "
        f"{MAX_REFINE}"
    )


def network_calls(steps: int, refine: int) -> int:
    """Network calls of one anonymize or deanonymize: the inversion (T for DDIM, T * K + 1 for
    ``fixed-point:K``: at most, keyflip stops converged steps early), then T sampling steps."""
    inversion = steps if refine == 0 else steps * refine + 1
    return inversion + steps


def inversion_name(refine: int) -> str:
    """The canonical name of ``refine`` fixed-point iterations (0: ``ddim``)."""
    return "ddim" if refine == 0 else f"fixed-point:{refine}"


def ddim_defaults(backbone: str) -> tuple[int, str]:
    """(steps, inversion) used with ``backbone`` when the user gives none."""
    return BACKBONE_DEFAULTS.get(backbone, (DEFAULT_STEPS, DEFAULT_INVERSION))
