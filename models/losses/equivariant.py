r"""Equivariant imaging (EI) loss and the training-time group actions.

.. math::
    x_1 = f(y), \quad x_2 = T_g x_1, \quad x_3 = f(A x_2), \qquad
    \mathcal L_{EI} = \|x_3 - x_2\|^2

(Chen, Tachella & Davies, ICCV 2021). ``A x_2`` is noise-free, as in the
paper's EI term. The loss teaches the part of the image that ``A`` cannot
see (its null space) only when ``A`` is *not* invariant to the group, so the
group is chosen per operator:

* ``rotate`` (any angle, bilinear): CT. Uniform views over [0, 180) are
  invariant to rot90 and flips whenever the view count allows it (50 views:
  90° is 25 views), so 90° steps would teach nothing there.
* ``rot90`` (90° steps and flips, D4): MRI with Cartesian column masks (a
  rotation turns columns into rows); shifts would teach nothing, since
  k-space masks commute with circular shifts (a shift is a phase ramp).
* ``shift_rot90`` (random integer circular shifts, or D4): inpainting with a
  random pixel mask, which no transform leaves invariant.

Example
-------
>>> import torch
>>> x = torch.arange(16.0).reshape(1, 4, 4)
>>> torch.equal(random_transform("rot90", torch.Generator().manual_seed(0))(x).sum(), x.sum())
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
TRANSFORMS = ("rotate", "rot90", "shift", "shift_rot90")


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
        element = 1 + draw(7)  # D4 minus the identity
        return _dihedral(element % 4, element >= 4)
    if group == "shift":
        h, w = shape
        return _shift(1 + draw(h - 1), draw(w))
    if group == "shift_rot90":
        return random_transform("shift" if draw(2) else "rot90", generator, shape)
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
