"""The settings only the embedded models take (their latent is the picture's own colours at
64 px): the tone shift (:mod:`faceanon.methods.colour`) and the denoised display
(:mod:`faceanon.methods.display`), each on by default for them and off in paper mode."""

from __future__ import annotations

from faceanon.backbones.base import Backbone


def embedded_setting(
    backbone: Backbone,
    paper_mode: bool,
    value: float | str | None,
    name: str,
    default: float,
    low: float,
    high: float,
    refusal: str,
    high_open: bool = False,
) -> float | None:
    """``value`` checked: ``"default"`` gives ``default`` for an embedded model outside paper
    mode and None otherwise; None stays None; a number must lie in (``low``, ``high``] (or
    [``low``, ``high``) with ``high_open``) and is refused for other backbones with
    ``refusal``."""
    pixels = getattr(backbone, "colour_latent", False)
    if value == "default":
        return default if pixels and not paper_mode else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise TypeError(f"{name} must be a number, None or 'default', got {value!r}")
    inside = low <= value < high if high_open else low < value <= high
    if not inside:
        bounds = f"[{low}, {high})" if high_open else f"({low}, {high}]"
        raise ValueError(f"{name} must be in {bounds}, got {value}")
    if not pixels:
        raise ValueError(f"{backbone.name}: {refusal}")
    return float(value)
