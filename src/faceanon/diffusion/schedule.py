"""Noise schedules (alpha-bar over the training steps) and the T-step subsequence used by DDIM."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class Levels:
    """The T + 1 noise levels a DDIM run visits, from clean (index 0) to noisiest (index T).

    ``alphas[i]`` is alpha-bar at level i; ``timesteps[i]`` is the training step the noise
    predictor is told at level i. Level 0 is the clean end: alpha-bar ``final_alpha_cumprod``
    (1 by default), told as step 0.
    """

    alphas: tuple[float, ...]
    timesteps: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.alphas) - 1


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A backbone's training schedule, and how its T-step subsequence is chosen.

    Field names and meanings follow diffusers' ``DDIMScheduler`` config so a model folder's
    ``scheduler_config.json`` maps onto it directly.
    """

    alphas_cumprod: np.ndarray  # float64, one per training step, decreasing
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    final_alpha_cumprod: float = 1.0

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @classmethod
    def from_betas(
        cls,
        beta_start: float,
        beta_end: float,
        beta_schedule: str = "scaled_linear",
        num_train_timesteps: int = 1000,
        *,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
    ) -> NoiseSchedule:
        n = num_train_timesteps
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
        elif beta_schedule == "scaled_linear":
            betas = np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
        elif beta_schedule == "squaredcos_cap_v2":

            def alpha_bar(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = np.array(
                [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
            )
        else:
            raise ValueError(f"unsupported beta_schedule {beta_schedule!r}")
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"unsupported timestep_spacing {timestep_spacing!r}")
        alphas_cumprod = np.cumprod(1.0 - betas)
        return cls(
            alphas_cumprod=alphas_cumprod,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            final_alpha_cumprod=1.0 if set_alpha_to_one else float(alphas_cumprod[0]),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """From a diffusers scheduler config (DDIM/DDPM keys).

        Flags that change what the engine would compute and that it does not implement are
        refused, never ignored. ``clip_sample`` is ignored: clipping the predicted clean sample
        is not invertible, so the deterministic engine never clips (as diffusers' inversion
        pipelines do not).
        """
        if config.get("trained_betas") is not None:
            raise ValueError("schedules with trained_betas are not supported")
        prediction = config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(
                f"scheduler prediction_type {prediction!r} is not supported (only epsilon)"
            )
        for flag in ("rescale_betas_zero_snr", "thresholding"):
            if config.get(flag):
                raise ValueError(f"scheduler flag {flag}=true is not supported")
        return cls.from_betas(
            float(config.get("beta_start", 0.0001)),
            float(config.get("beta_end", 0.02)),
            str(config.get("beta_schedule", "linear")),
            int(config.get("num_train_timesteps", 1000)),
            timestep_spacing=str(config.get("timestep_spacing", "leading")),
            steps_offset=int(config.get("steps_offset", 0)),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
        )

    def subsequence(self, steps: int) -> list[int]:
        """The T training steps DDIM visits, ascending (diffusers' ``set_timesteps``)."""
        n = self.num_train_timesteps
        if not 1 <= steps <= n:
            raise ValueError(f"steps must be between 1 and {n}, got {steps}")
        if self.timestep_spacing == "leading":
            ts = np.arange(steps) * (n // steps) + self.steps_offset
        elif self.timestep_spacing == "trailing":
            ts = np.round(np.arange(n, 0, -n / steps)[::-1]).astype(np.int64) - 1
        else:
            ts = np.linspace(0, n - 1, steps).round().astype(np.int64)
        return [int(t) for t in ts]

    def levels(self, steps: int) -> Levels:
        ts = self.subsequence(steps)
        alphas = [self.final_alpha_cumprod] + [float(self.alphas_cumprod[t]) for t in ts]
        return Levels(alphas=tuple(alphas), timesteps=(0, *ts))
