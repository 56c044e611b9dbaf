r"""Equivariant imaging (EI) loss and the training-time group actions.

.. math::
    x_1 = f(y), \quad x_2 = T_g x_1, \quad x_3 = f(A x_2), \qquad
    \mathcal L_{EI} = \|x_3 - x_2\|^2

(Chen, Tachella & Davies, ICCV 2021). ``A x_2`` is noise-free, as in the
paper's EI term. The loss teaches the part of the image that ``A`` cannot
see (its null space) only when ``A`` is *not* invariant to the group, so the
group is chosen per operator. The groups of the pixel grid carry the names of
the service's equivariance score (``service/equivariance.py``):

* ``rot90``: rotations by 90, 180, 270 degrees (square images).
* ``flips``: mirror left-right, upside down, both.
* ``D4``: the seven non-identity rotations and reflections.
* ``shifts``: integer circular shifts (with a non-zero vertical part, so never
  the identity).
* ``shifts+D4``: a shift or an element of D4, each half of the time.
* ``rotate``: any angle (bilinear interpolation), beyond the pixel grid.

Chosen per recipe (``models/train/recipes.py``):

* CT, 50 uniform views over [0, 180): ``rotate``. The view set is invariant to
  rot90 (90° is 25 views) and to flips (a flip maps the angle θ to -θ, another
  view of the set), and a shift moves no null-space direction (it multiplies the
  Fourier transform by a phase, the sampled radial lines stay put), so every
  grid group teaches nothing there.
* MRI, Cartesian column masks: ``D4``. A quarter turn or a transpose turns
  columns into rows, which is new information; ``flips`` alone would teach nothing
  (a real image's k-space is Hermitian, so a column set already sees its mirror),
  nor would shifts (a shift is a phase ramp in k-space: the mask commutes with it).
* Inpainting, random pixel masks: ``shifts+D4``: no transform leaves such a mask
  invariant, and shifts add many more elements than D4's seven.

Bilinear rotation blurs: a rotation there and back costs an ellipse phantom
31.3 dB (bicubic 35.6), so the EI target :math:`T_g x_1` is a slightly blurred
image. Measured (``rotate`` with bicubic interpolation, 600 more CPU steps
from the shipped ct-ei, A/B): +0.16 dB, too little to re-train for; left as is.

Example
-------
>>> import torch
>>> x = torch.arange(16.0).reshape(1, 4, 4)
>>> torch.equal(random_transform("D4", torch.Generator().manual_seed(0))(x).sum(), x.sum())
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.physics.operators import Physics

__all__ = ["TRANSFORMS", "ei_loss", "random_transform"]

Transform = Callable[[torch.Tensor], torch.Tensor]
TRANSFORMS = ("rot90", "flips", "D4", "shifts", "shifts+D4", "rotate")


def _dihedral(k: int, flip: bool) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        out = torch.rot90(x, k, dims=(-2, -1))
        return torch.flip(out, dims=(-1,)) if flip else out

    return apply


def _rotation(angle: float) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        theta = x.new_tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 1, *x.shape[-2:]], align_corners=False)
        out = F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", align_corners=False)
        return out.squeeze(1)

    return apply


def _shift(dy: int, dx: int) -> Transform:
    return lambda x: torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def random_transform(group: str, generator: torch.Generator, shape=(128, 128)) -> Transform:
    """A random non-identity element of ``group``, drawn from ``generator``."""

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    if group == "rotate":
        return _rotation(2 * math.pi * (0.02 + 0.96 * float(torch.rand(1, generator=generator))))
    if group == "rot90":
        return _dihedral(1 + draw(3), False)
    if group == "flips":  # flip_h, flip_v (= flip_h then rot180), flip_hv (= rot180)
        element = draw(3)
        return _dihedral(0 if element == 0 else 2, element < 2)
    if group == "D4":
        element = 1 + draw(7)  # D4 minus the identity
        return _dihedral(element % 4, element >= 4)
    if group == "shifts":
        h, w = shape
        return _shift(1 + draw(h - 1), draw(w))
    if group == "shifts+D4":
        return random_transform("shifts" if draw(2) else "D4", generator, shape)
    raise ValueError(f"unknown transform group {group!r}; known: {TRANSFORMS}")


def ei_loss(
    x_net: torch.Tensor,
    physics: Physics,
    recon: Callable[[torch.Tensor], torch.Tensor],
    transform: Transform,
) -> torch.Tensor:
    """``‖f(A T x₁) - T x₁‖²`` averaged over pixels and batch."""
    x2 = transform(x_net)
    x3 = recon(physics.A(x2))
    return ((x3 - x2) ** 2).mean()
