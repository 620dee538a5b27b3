"""The learned reconstruction attack (issue 12, part 1): a small U-Net trained to map a method's
outputs back to its inputs, as an attacker who can run the method on faces of their choice
would (HYDRO's threat model, at CPU size).

The reconstructor works on aligned 64 x 64 face crops in [-1, 1] and predicts the original as
the input plus a correction (so an untrained network starts near "return the published face").
Training: L1 loss, Adam, a fixed number of steps or a time limit, whichever comes first,
seeded (weights, batches), a progress callback, and a checkpoint written atomically. No
identity loss: none of the recognizers available here is differentiable in torch (dlib, SFace
and ArcFace run outside torch), so the attack optimises pixels only, which makes it weaker than
HYDRO's (L1 + LPIPS + ArcFace): its success is a lower bound on a stronger attacker's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

SIDE = 64


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class Reconstructor(nn.Module):
    """U-Net, 64 -> 32 -> 16 -> 8 px and back with skips; ``width`` channels at the top
    (about 0.5 M parameters at width 32)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.down = nn.ModuleList([_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.pool = nn.AvgPool2d(2)
        self.middle = _block(4 * w, 4 * w)
        self.up = nn.ModuleList([_block(8 * w, 2 * w), _block(4 * w, w), _block(2 * w, w)])
        self.out = nn.Conv2d(w, 3, 1)
        nn.init.zeros_(self.out.weight)  # untrained: the published face itself
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.middle(h)
        for block in self.up:
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1))
        out: torch.Tensor = x + self.out(h)
        return out


def to_batch(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (N) x (SIDE, SIDE, 3) crops -> float (N, 3, SIDE, SIDE) in [-1, 1]."""
    import cv2

    resized = [
        c
        if c.shape[:2] == (SIDE, SIDE)
        else cv2.resize(c, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        for c in crops
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    out = ((batch.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(out.permute(0, 2, 3, 1).numpy())


@dataclass
class Training:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean L1 per step


def train(
    published: torch.Tensor,
    originals: torch.Tensor,
    *,
    steps: int = 2000,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 32,
    time_limit: float | None = None,
    checkpoint: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Reconstructor, Training]:
    """Train a reconstructor on (published, original) pairs, (N, 3, SIDE, SIDE) each; stops
    after ``steps`` or ``time_limit`` seconds. The global RNG is left as it was."""
    if published.shape != originals.shape or published.ndim != 4:
        raise ValueError("published and originals must be two (N, 3, H, W) tensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Reconstructor(width)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
        order = torch.Generator().manual_seed(seed)
        record = Training()
        started = time.monotonic()
        model.train()
        for step in range(steps):
            pick = torch.randint(0, len(published), (min(batch, len(published)),), generator=order)
            flip = torch.rand(len(pick), generator=order) < 0.5  # mirrored faces are faces
            x, y = published[pick], originals[pick]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            loss = (model(x) - y).abs().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            record.losses.append(loss.item())
            record.steps = step + 1
            if progress is not None:
                progress(step + 1, steps, record.losses[-1])
            if time_limit is not None and time.monotonic() - started > time_limit:
                break
        record.seconds = time.monotonic() - started
    model.eval()
    if checkpoint is not None:
        save(model, record, checkpoint, width=width, seed=seed)
    return model, record


def save(model: Reconstructor, record: Training, path: Path, **meta: object) -> None:
    """The weights and how they were trained, written atomically."""
    import io

    from faceanon.io import write_atomic

    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "steps": record.steps, **meta}, buffer)
    write_atomic(Path(path), buffer.getvalue())


def load(path: Path) -> Reconstructor:
    """A checkpoint written by :func:`save` (read with ``weights_only=True``)."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = Reconstructor(int(data.get("width", 32)))
    model.load_state_dict(data["state_dict"])
    return model.eval()


@torch.inference_mode()
def reconstruct(model: Reconstructor, published: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([model(published[i : i + batch]) for i in range(0, len(published), batch)])
