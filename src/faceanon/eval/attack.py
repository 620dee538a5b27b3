"""The learned reconstruction attack (issue 12, part 1): a small U-Net trained to map a method's
outputs back to its inputs, as an attacker who can run the method on faces of their choice
would (HYDRO's threat model, at CPU size).

The reconstructor works on aligned 64 x 64 face crops in [-1, 1] and predicts the original as
the input plus a correction (so an untrained network starts near "return the published face").
Training: L1 loss, optionally plus an identity loss (``identity``: a differentiable recognizer
of :mod:`faceanon.faces.torch_recognizers`, 1 - cosine between the reconstruction's embedding
and the original's, times ``identity_weight``), Adam, a fixed number of steps or a time limit,
whichever comes first, seeded (weights, batches), a progress callback, and a checkpoint written
atomically. HYDRO's attacker adds LPIPS (no offline weights here): with L1 and identity this
one is still weaker than theirs, its success a lower bound on a stronger attacker's. Score with
recognizers other than the attacker's own: it was trained to please that one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from faceanon.faces.finder import Face, FaceFinder

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
    losses: list[float] = field(default_factory=list)  # the loss per step (L1 + identity)


IDENTITY_WEIGHT = 0.1  # times (1 - cosine); L1 of published faces is 0.02-0.1


def embed(recognizer: nn.Module, faces: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The recognizer's unit embeddings of faces, no gradient."""
    with torch.no_grad():
        return torch.cat([recognizer(faces[i : i + batch]) for i in range(0, len(faces), batch)])


def identity_loss(
    recognizer: nn.Module, rebuilt: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Mean 1 - cosine between the recognizer's embeddings of the reconstructions and
    ``target``, the originals' (:func:`embed`)."""
    loss: torch.Tensor = 1.0 - (recognizer(rebuilt) * target).sum(dim=1).mean()
    return loss


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
    identity: nn.Module | None = None,
    identity_weight: float = IDENTITY_WEIGHT,
) -> tuple[Reconstructor, Training]:
    """Train a reconstructor on (published, original) pairs, (N, 3, SIDE, SIDE) each; stops
    after ``steps`` or ``time_limit`` seconds. ``identity``: a recognizer for the identity
    loss (see the module). The global RNG is left as it was."""
    if published.shape != originals.shape or published.ndim != 4:
        raise ValueError("published and originals must be two (N, 3, H, W) tensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Reconstructor(width)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
        order = torch.Generator().manual_seed(seed)
        if identity is not None:  # the originals' embeddings, as they are and mirrored
            targets = torch.stack([embed(identity, originals), embed(identity, originals.flip(-1))])
        record = Training()
        started = time.monotonic()
        model.train()
        for step in range(steps):
            pick = torch.randint(0, len(published), (min(batch, len(published)),), generator=order)
            flip = torch.rand(len(pick), generator=order) < 0.5  # mirrored faces are faces
            x, y = published[pick], originals[pick]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            rebuilt = model(x)
            loss = (rebuilt - y).abs().mean()
            if identity is not None:
                target = targets[flip.long(), pick]
                loss = loss + identity_weight * identity_loss(identity, rebuilt, target)
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

    from faceanon.media.io import write_atomic

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


# ---------------------------------------------------------------------------------------------
# The attack on a method of ``faceanon evaluate`` (``--attack reconstruct``)


class Attackable(Protocol):
    """A method of :mod:`faceanon.eval.protocols` that publishes one condition."""

    label: str
    published: str  # the condition the attacker gets to see
    grid: tuple[int, int]

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]: ...

    def publish(
        self, photos: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], seed: int
    ) -> list[np.ndarray]: ...


def correction_transform(model: Reconstructor) -> Callable[..., list[np.ndarray]]:
    """A crop transform applying the attack: each aligned crop plus the reconstructor's
    correction, computed at SIDE px and enlarged to the crop's size (the published crop's own
    detail is kept; the network only adds what it learnt to put back)."""

    def run(crops: list[np.ndarray], *_: object) -> list[np.ndarray]:
        if not crops:
            return []
        small = to_batch(crops)
        correction = reconstruct(model, small) - small
        size = crops[0].shape[:2]
        up = nn.functional.interpolate(correction, size=size, mode="bilinear", align_corners=False)
        full = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return to_images(full + up)

    return run


def training_photos(
    folder: Path,
    count: int,
    finder: FaceFinder,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[np.ndarray, Face]]:
    """``count`` (photo, face) pairs for the attacker's training set from ``folder`` (images,
    or the zip shards of faces64), drawn in a seeded order: one face per image, the one
    nearest its centre. Images under 128 px are face crops: framed as
    :func:`faceanon.training.fit_prior.align_crop` frames them, so the detector finds the face.
    Unreadable images and images without a face are skipped."""
    from faceanon.errors import FaceanonError
    from faceanon.training.fit_prior import central_face, frame_crop, list_images, read_images

    items = list_images(folder)
    if not items:
        raise FaceanonError(f"{folder}: no images (*.jpg, *.png, or zip shards of them)")
    order = np.random.default_rng(seed).permutation(len(items))
    out: list[tuple[np.ndarray, Face]] = []
    for start in range(0, len(items), 256):  # read in name order within a block: zip access
        block = sorted(order[start : start + 256].tolist())
        for _, image in read_images([items[i] for i in block]):
            if image is None or min(image.shape[:2]) < 16:
                continue
            photo = frame_crop(image) if min(image.shape[:2]) < 128 else image
            face = central_face(finder.find(photo), photo.shape)
            if face is not None:
                out.append((photo, face))
                if progress is not None:
                    progress(len(out), count)
                if len(out) == count:
                    return out
    if not out:
        raise FaceanonError(f"{folder}: no face found in any image")
    return out


def training_pairs(
    method: Attackable,
    photos: Sequence[tuple[np.ndarray, Face]],
    seed: int = 0,
    chunk: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(published, original) SIDE-px crops: the method run by the attacker on their photos
    (``method.publish``, keys and randomness of their own), cut at each face's alignment."""
    from faceanon.faces.align import warp_to_crop

    rng = np.random.default_rng(seed)
    if progress is not None:
        progress(0, len(photos))  # the stage's clock starts now, not after the first chunk
    published: list[torch.Tensor] = []
    originals: list[torch.Tensor] = []
    for start in range(0, len(photos), chunk):
        part = photos[start : start + chunk]
        outputs = method.publish(
            [p for p, _ in part], [[f] for _, f in part], int(rng.integers(2**62))
        )
        alignments = [face.geometry.alignment for _, face in part]
        pairs = zip(part, outputs, alignments, strict=True)
        crops = [(warp_to_crop(o, a), warp_to_crop(p, a)) for (p, _), o, a in pairs]
        published.append(to_batch([c for c, _ in crops]))
        originals.append(to_batch([c for _, c in crops]))
        if progress is not None:
            progress(min(start + chunk, len(photos)), len(photos))
    return torch.cat(published), torch.cat(originals)


@dataclass
class AttackedMethod:
    """A method of the evaluation plus the reconstruction attack on its published output: its
    own conditions, and ``<published> -> reconstructed`` (the attacker's network applied to
    each face of the published photo, at the face geometry found on the original: the
    attacker's best case)."""

    method: Attackable
    model: Reconstructor
    record: dict[str, float | int]

    @property
    def label(self) -> str:
        return self.method.label

    @property
    def reconstructed(self) -> str:
        return f"{self.method.published} -> reconstructed"

    def run(self, photo: np.ndarray, faces: list[Face], name: str) -> dict[str, np.ndarray]:
        from faceanon.eval.methods import paste

        out = self.method.run(photo, faces, name)
        transform = correction_transform(self.model)
        out[self.reconstructed] = paste(
            out[self.method.published], faces, transform, [None] * len(faces), self.method.grid
        )
        return out


def attack_method(
    method: Attackable,
    photos: Sequence[tuple[np.ndarray, Face]],
    minutes: float,
    seed: int = 0,
    checkpoint: Path | None = None,
    stage: Callable[[str, int, int], None] | None = None,
    steps: int = 100_000,
    batch: int = 32,
    width: int = 32,
    identity: str | None = None,
) -> AttackedMethod:
    """Make the attacker's pairs with ``method``, hold out a tenth, train for ``minutes``
    (or ``steps`` of ``batch`` pairs, whichever ends first), and measure the held-out L1 of
    the published crops and of their reconstructions (the attack must lower it to be an
    attack at all). ``identity``: the recognizer of the identity loss (``sface``,
    ``arcface``; None: L1 only); the held-out cosine to the originals is measured with it."""
    from faceanon.faces.torch_recognizers import crop_recognizer

    recognizer = None if identity is None else crop_recognizer(identity)
    label = method.label

    def pairs_progress(done: int, total: int) -> None:
        if stage is not None:
            stage(f"attack {label}: pairs", done, total)

    x, y = training_pairs(method, photos, seed, progress=pairs_progress)
    held = max(1, len(x) // 10)
    limit = max(1.0, 60.0 * minutes)
    started = time.monotonic()

    def train_progress(step: int, steps: int, loss: float) -> None:
        if stage is not None:
            done = min(int(limit), max(1, int(time.monotonic() - started)))
            stage(f"attack {label}: training (seconds)", done, int(limit))

    model, record = train(
        x[held:],
        y[held:],
        steps=steps,
        batch=batch,
        width=width,
        seed=seed,
        time_limit=limit,
        checkpoint=checkpoint,
        progress=train_progress,
        identity=recognizer,
    )
    rebuilt = reconstruct(model, x[:held])
    summary: dict[str, float | int] = {
        "training_pairs": len(x) - held,
        "held_out_pairs": held,
        "steps": record.steps,
        "seconds": round(record.seconds, 1),
        "final_loss": round(float(np.mean(record.losses[-20:])), 4) if record.losses else 0.0,
        "held_out_l1_published": round(float((x[:held] - y[:held]).abs().mean()), 4),
        "held_out_l1_reconstructed": round(float((rebuilt - y[:held]).abs().mean()), 4),
    }
    if recognizer is not None:
        with torch.no_grad():
            target = embed(recognizer, y[:held])
            for name, faces in (("published", x[:held]), ("reconstructed", rebuilt)):
                cosine = 1.0 - float(identity_loss(recognizer, faces, target))
                summary[f"held_out_{identity}_cosine_{name}"] = round(cosine, 4)
    return AttackedMethod(method, model, summary)
