"""The new face in the person's colouring: a public, exactly invertible colour shift.

The embedded models draw every new face in about the same light skin tone, so a dark-skinned
person's kept neck meets a pale face at the mask's border. After the keyed map, the face (the
latent inside the mask) is moved along the skin-tone axis ``AXIS`` so that the band along its
lower border comes a share ``alpha`` of the way to the kept band just outside it:

    p_out = AXIS . mean of z' over the outer band's skin (outside the mask: kept, public)
    p_in  = AXIS . mean of g over the inner band    (g: the keyed map's face)
    z'    = g + alpha * (p_out - p_in) * AXIS inside the mask

Undoing it needs nothing secret: the shifted face's own band gives
(1 - alpha) * p_in + alpha * p_out, so p_in, and with it g, follows from z' alone. Anyone can
undo the shift, so it neither adds to nor takes from what the key protects: an attacker gets g
from z' as the restore does (the evaluation's attacks do so first).

Why these choices (measured with ``benchmarks/realism.py --colour``, docs/benchmarks.md): the
bands are in the mask's lower half (cheeks and jaw; outside, neck and the skin beside it), since
the upper band meets hair; the outer band's cells count by how skin-like their colour is (soft
bounds on BT.601 chroma and luma, so that a black collar or a blue wall does not count, and
so that rounding a cell by a level changes its weight by little: the restore reads the 8-bit
image); and the move is along the skin-tone axis only, not to the band's full colour, whose
hue (background, clothes) a full match paints on the face. ``AXIS`` is the first principal
direction of the inner band's mean colour over the 35,702 faces64 crops ``fit-net`` trains on
(92% of that colour's variance): skin tones vary along it, lighter or darker.

The latent must be colour in pixels (the embedded models' 4x4 area means); other backbones'
latents are not, and are left alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceanon.backbones.base import Backbone
from faceanon.limits import MAX_COLOUR
from faceanon.methods.embedded import embedded_setting

DEFAULT_ALPHA = 0.8
AXIS = (0.63, 0.57, 0.53)  # normalised below; in R, G, B
BAND = 3  # latent cells (12 px of the 256-px crop)
MIN_CELLS = 8  # kept skin below this (cells of weight 1) shrinks the move; no inner band: none
# Skin-like colours, 8-bit BT.601: the classic chroma box (Chai and Ngan 1999) and a luma floor
# below dark skin, with soft edges SOFTNESS levels wide.
CR, CB, LUMA, SOFTNESS = (133.0, 173.0), (77.0, 127.0), 25.0, 4.0


def bands(mask: torch.Tensor, width: int = BAND) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner and outer bands, (B, 1, h, w) bool each, of a bool mask (B, 1, h, w): cells
    of the mask within ``width`` cells of its edge and cells outside it within ``width``,
    both at or below the mask's middle row."""
    m = mask.float()
    k = 2 * width + 1
    grown = F.max_pool2d(m, k, stride=1, padding=width) > 0
    shrunk = -F.max_pool2d(-m, k, stride=1, padding=width) > 0
    rows = torch.arange(mask.shape[-2], device=mask.device, dtype=torch.float32)[:, None]
    count = m.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    middle = (m * rows).sum(dim=(-2, -1), keepdim=True) / count
    lower = rows >= middle
    return mask & ~shrunk & lower, grown & ~mask & lower


def skin(z: torch.Tensor) -> torch.Tensor:
    """How skin-like each cell's colour is, (B, 1, h, w) in [0, 1] (see ``CR``)."""
    r, g, b = ((z + 1) * 127.5).unbind(dim=1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b

    def within(v: torch.Tensor, low: float, high: float = float("inf")) -> torch.Tensor:
        return torch.sigmoid((v - low) / SOFTNESS) * torch.sigmoid((high - v) / SOFTNESS)

    return (within(cr, *CR) * within(cb, *CB) * within(luma, LUMA))[:, None]


def _along(z: torch.Tensor, band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per latent the (weighted) mean over ``band`` projected on the axis, and the band's
    weight (its cells' count, or their skin weights' sum): (B,) each."""
    b = band.to(z.dtype)
    cells = b.sum(dim=(1, 2, 3))
    mean = (z * b).sum(dim=(-2, -1)) / cells.clamp(min=1)[:, None]
    return mean @ _axis(z), cells


def _axis(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.tensor(AXIS, dtype=z.dtype, device=z.device), dim=0)


def _moved(z: torch.Tensor, mask: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``z`` with each face (inside ``mask``) moved by ``offset`` (B,) along the axis."""
    return z + offset[:, None, None, None] * _axis(z)[None, :, None, None] * mask


def _share(alpha: float, inner: torch.Tensor, skin_cells: torch.Tensor) -> torch.Tensor:
    """Each face's share of the move: ``alpha``, scaled down where the kept band has less than
    ``MIN_CELLS`` of skin (continuously, so that the 8-bit image's rounding of the kept cells
    cannot switch the move on or off at restore time), none without an inner band."""
    enough = (skin_cells / MIN_CELLS).clamp(max=1)
    return alpha * enough * (inner >= MIN_CELLS)


def shift(z: torch.Tensor, mask: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The keyed map's latents ``z`` (B, 3, h, w) with each face moved toward the kept skin
    outside it (see the module); ``mask`` bool (B, 1, h, w)."""
    inner, outer = bands(mask)
    p_in, inner_cells = _along(z, inner)
    p_out, skin_cells = _along(z, outer * skin(z))
    share = _share(alpha, inner_cells, skin_cells)
    return _moved(z, mask, share * (p_out - p_in))


def unshift(z: torch.Tensor, mask: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The inverse of :func:`shift` (exact up to rounding, which it scales by at most
    1 / (1 - alpha) in the face's tone)."""
    inner, outer = bands(mask)
    shifted, inner_cells = _along(z, inner)
    p_out, skin_cells = _along(z, outer * skin(z))
    share = _share(alpha, inner_cells, skin_cells)
    p_in = (shifted - share * p_out) / (1 - share)
    return _moved(z, mask, -share * (p_out - p_in))


def checked_share(backbone: Backbone, paper_mode: bool, colour: float | str | None) -> float | None:
    """The tone shift's share (:class:`Anonymizer`'s ``colour``), checked."""
    refusal = "its latent is not colour in pixels (no tone shift)"
    return embedded_setting(
        backbone, paper_mode, colour, "colour", DEFAULT_ALPHA, 0, MAX_COLOUR, refusal
    )
