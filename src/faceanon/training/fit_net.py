"""Train the embedded face model with a learned noise predictor (``face-net``).

    faceanon fit-net ../shared/data/faces64 -o face_net.safetensors

Data: the crops aligned exactly as ``faceanon fit-prior`` aligns them
(:func:`faceanon.training.fit_prior.align_dataset`; ``--aligned-cache`` keeps them in a .npz
to train again without re-aligning), a seeded 5% held out, the rest and their mirror images used.
Statistics: the mean latent (made left-right symmetric), the 3 x 3 colour PCA, the variance of
every DCT coordinate and the covariance of the surrogate block
(:mod:`faceanon.backbones.face_net`). Training: noise-prediction MSE on the learned block at
training steps drawn uniformly from the reference schedule's 1000, AdamW with a cosine
learning rate, an exponential moving average of the weights (what is saved), seeded; the
held-out loss at a fixed noise draw is logged along the way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceanon.backbones.face_net import Architecture, Denoiser, FaceNet, predict, white_noise
from faceanon.backbones.face_prior import DIM, GRID, dct2, mirror
from faceanon.errors import FaceanonError

VARIANCE_FLOOR = 1e-5
DEFAULT_ARCHITECTURE = Architecture()


def statistics(x: np.ndarray, arch: Architecture) -> tuple[np.ndarray, ...]:
    """Mean (D,), colour (3, 3), per-coordinate variances (D,) and the surrogate block's
    covariance of flattened latents ``x`` (N, D) and their mirror images."""
    n = len(x)
    mean = 0.5 * (x.mean(axis=0) + mirror(x.mean(axis=0, keepdims=True))[0])
    colours = np.zeros((3, 3))
    for i in range(0, n, 2048):
        part = (x[i : i + 2048] - mean).reshape(-1, 3, GRID * GRID)
        colours += np.einsum("nip,njp->ij", part, part)
    colour = np.linalg.eigh(colours)[1][:, ::-1].T
    colour *= np.sign(colour[np.arange(3), np.abs(colour).argmax(axis=1)])[:, None]
    s0 = arch.surrogate
    variances, cov = np.zeros(DIM), np.zeros((len(s0), len(s0)))
    for i in range(0, n, 2048):
        part = x[i : i + 2048] - mean
        for coeffs in (dct2(part, colour), dct2(mirror(part), colour)):
            variances += (coeffs**2).sum(axis=0)
            cov += coeffs[:, s0].T @ coeffs[:, s0]
    cov = cov / (2 * n) + VARIANCE_FLOOR * np.eye(len(s0))  # positive definite with few crops
    return mean, colour, np.maximum(variances / (2 * n), VARIANCE_FLOOR), cov


def learned_block(
    x: np.ndarray, mean: np.ndarray, colour: np.ndarray, arch: Architecture
) -> np.ndarray:
    """The learned block's coordinates (2N, |S|) float32 of latents (N, D) and their mirrors."""
    idx = arch.learned
    parts = []
    for flip in (False, True):
        for i in range(0, len(x), 2048):
            part = x[i : i + 2048] - mean
            parts.append(dct2(mirror(part) if flip else part, colour)[:, idx].astype(np.float32))
    return np.concatenate(parts)


@dataclass
class TrainLog:
    steps: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    heldout: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def train(
    latents: np.ndarray,
    heldout: np.ndarray,
    arch: Architecture = DEFAULT_ARCHITECTURE,
    steps: int = 20000,
    floor: tuple[float, float] = (1e-2, 1e-3),
    minutes: float | None = None,
    batch: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    ema: float = 0.999,
    log_every: int = 250,
    on_log: Callable[[int, float, float, float], None] | None = None,
) -> tuple[FaceNet, TrainLog]:
    """Fit the statistics on ``latents`` (N, 3, 64, 64) and train the denoiser for ``steps``
    (or until ``minutes`` of wall-clock time); ``heldout`` (M, 3, 64, 64) gives the held-out
    loss. Deterministic for a seed and a step count."""
    from faceanon.backbones.closed_form import reference_schedule

    arch.check()
    if len(latents) < 2:
        raise FaceanonError(f"only {len(latents)} usable crops: too few to train a face model")
    x = latents.reshape(len(latents), -1).astype(np.float64)
    mean, colour, variances, cov = statistics(x, arch)
    data = torch.from_numpy(learned_block(x, mean, colour, arch))
    del x
    test = torch.from_numpy(
        learned_block(heldout.reshape(len(heldout), -1).astype(np.float64), mean, colour, arch)
        if len(heldout)
        else np.zeros((0, len(arch.learned)), np.float32)
    )
    noise = white_noise(floor)[arch.learned]
    v = torch.from_numpy(variances[arch.learned] + noise).float()
    noise_sd = torch.from_numpy(np.sqrt(noise)).float()
    alphas = torch.as_tensor(reference_schedule().alphas_cumprod, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Denoiser(arch)
    average = deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    total = steps

    def loss_of(
        model: Denoiser, x0: torch.Tensor, t: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        """Noise MSE; the data are the faces plus the model's white noise (FaceNet.noise),
        drawn from the second half of ``n``."""
        n, extra = n.chunk(2, dim=1)
        x0 = x0 + noise_sd[None] * extra
        a = alphas[t]
        xt = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * n
        loss: torch.Tensor = ((predict(model, xt, a, v) - n) ** 2).mean()
        return loss

    test_gen = torch.Generator().manual_seed(seed + 1)
    test_t = torch.randint(0, len(alphas), (len(test),), generator=test_gen)
    test_n = torch.randn((len(test), 2 * test.shape[1]), generator=test_gen)
    log = TrainLog()
    start = time.perf_counter()
    running = 0.0
    step = 0
    while step < total:
        if minutes is not None and time.perf_counter() - start > 60 * minutes:
            break
        frac = step / total
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 500) * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        t = torch.randint(0, len(alphas), (batch,), generator=gen)
        n = torch.randn((batch, 2 * data.shape[1]), generator=gen)
        loss = loss_of(net, data[idx], t, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema, (1 + step) / (10 + step))
            for p_avg, p in zip(average.parameters(), net.parameters(), strict=True):
                p_avg.lerp_(p, 1 - decay)
        running += float(loss.detach())
        step += 1
        if step % log_every == 0 or step == total:
            with torch.no_grad():
                held = float(loss_of(average, test, test_t, test_n)) if len(test) else math.nan
            count = log_every if step % log_every == 0 else step % log_every
            log.steps.append(step)
            log.train.append(running / count)
            log.heldout.append(held)
            log.seconds.append(time.perf_counter() - start)
            if on_log is not None:
                on_log(step, running / count, held, log.seconds[-1])
            running = 0.0
    average.eval()
    return FaceNet(arch, mean, colour, variances, cov, average, floor=floor), log


def sample_grid(model: FaceNet, count: int = 16, steps: int = 50, seed: int = 0) -> np.ndarray:
    """``count`` faces drawn from the model (DDIM from seeded noise), tiled as one uint8
    image (rows of 4 crops of 256 px)."""
    from faceanon.anonymizer import to_uint8
    from faceanon.backbones.face_net import FaceNetBackbone
    from faceanon.diffusion.loops import sample

    backbone = FaceNetBackbone(model)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((count, *backbone.latent_shape), generator=gen, dtype=torch.float64)
    with torch.inference_mode():
        z0 = sample(backbone.eps, z, backbone.schedule.levels(steps))
        crops = to_uint8(backbone.decode(z0.float()))
    rows = [np.concatenate(crops[i : i + 4], axis=1) for i in range(0, count, 4)]
    return np.concatenate(rows, axis=0)


def save_curve(log: TrainLog, path: Path) -> None:
    """The loss curve as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(log.steps, log.train, label="training batch (running mean)")
    ax.plot(log.steps, log.heldout, label="held-out (EMA weights, fixed noise)")
    ax.set_xlabel("step")
    ax.set_ylabel("noise MSE on the learned block")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def aligned_latents(
    data_dir: Path,
    cache: Path | None,
    max_padding: float,
    workers: int,
    limit: int | None,
    say: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Latents (N, 3, 64, 64) float32 of the aligned crops and their padded fraction (N,):
    from ``cache`` if it exists (a .npz this function wrote), else aligned now (and written to
    ``cache`` when given). Every crop with a face is kept; ``max_padding`` filters later."""
    from faceanon.media.io import write_atomic
    from faceanon.training.fit_prior import align_dataset

    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                latents, padding = f["latents"].astype(np.float32), f["padding"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise FaceanonError(f"{cache}: not an aligned-crop cache ({exc})") from None
        if (
            latents.ndim != 4
            or latents.shape[1:] != (3, GRID, GRID)
            or len(padding) != len(latents)
        ):
            raise FaceanonError(f"{cache}: not an aligned-crop cache (shapes)")
        say(f"{len(latents)} aligned crops read from {cache}")
    else:
        if not data_dir.is_dir():
            raise FaceanonError(f"{data_dir}: not a folder")
        say(f"aligning the crops of {data_dir} ({workers} worker(s))")
        aligned = align_dataset(data_dir, 1.0, workers, limit)
        latents, padding = aligned.latents, aligned.padding
        say(f"{len(latents)} crops with a face, {len(aligned.missed)} without")
        if cache is not None:
            import io

            buffer = io.BytesIO()
            np.savez(
                buffer,
                latents=latents.astype(np.float16),
                padding=padding,
                names=np.array(aligned.names),
            )
            write_atomic(cache, buffer.getvalue(), overwrite=True)
    keep = padding <= max_padding
    return latents[keep], padding[keep]


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def recipe(args: object, fit: int, held: int, log: TrainLog) -> str:
    """The text stored in the model file: what it is, how it was made, its licence."""
    a = vars(args)
    last = f"{log.heldout[-1]:.5f}" if log.heldout else "n/a"
    return "\n".join(
        [
            "faceanon face-net model (faceanon/backbones/face_net.py)",
            f"rebuild: faceanon fit-net DATA_DIR -o FILE --steps {a['steps']} --batch {a['batch']}"
            f" --width {a['width']} --blocks {a['blocks']} --seed {a['seed']}"
            f" --floor {a['floor'][0]} {a['floor'][1]}"
            f" --heldout {a['heldout']} --max-padding {a['max_padding']}"
            + (f" --limit {a['limit']}" if a.get("limit") else "")
            + (f" --minutes {a['minutes']}" if a.get("minutes") else ""),
            f"{fit} crops fitted (x2 with mirror images), {held} held out; trained"
            f" {log.steps[-1] if log.steps else 0} steps, held-out noise MSE {last}",
            "licence: derived from the training crops; for faces64 (UTKFace and CelebA):"
            " non-commercial research use only",
        ]
    )
