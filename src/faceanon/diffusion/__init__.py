"""Deterministic DDIM (eta = 0) in both directions, and the loops built on it."""

from faceanon.diffusion.ddim import ddim_step
from faceanon.diffusion.loops import invert, sample
from faceanon.diffusion.schedule import Levels, NoiseSchedule

__all__ = ["Levels", "NoiseSchedule", "ddim_step", "invert", "sample"]
