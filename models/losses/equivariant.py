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
* ``rotate``: any angle, beyond the pixel grid (exact for band-limited images: below).

Chosen per recipe (``models/train/recipes.py``):

* CT, 50 uniform views over [0, 180): ``rotate``. The view set is invariant to
  rot90 (90° is 25 views) and to flips (a flip maps the angle θ to -θ, another
  view of the set), and a shift moves no null-space direction (it multiplies the
  Fourier transform by a phase, the sampled radial lines stay put), so every
  grid group teaches nothing there.
* MRI, Cartesian column masks: ``D4`` of the grid groups, ``rotate`` in mri-ei. A
  quarter turn or a transpose turns columns into rows, which is new information;
  ``flips`` alone would teach nothing
  (a real image's k-space is Hermitian, so a column set already sees its mirror),
  nor would shifts (a shift is a phase ramp in k-space: the mask commutes with it).
  Under one fixed mask D4 leaves a gap: a frequency whose row and column are both
  unsampled stays unsampled under every element of D4 (about half of the non-constant
  k-space at 4x; a test projects an image onto it), and a rotation off the grid
  would bring it into view. mri-ei draws a fresh mask every step, so other masks
  sample it: in an A/B with the gradient through the target, ``rotate`` trained no
  better than D4 (docs/training-log.md, "MRI: a fresh schedule, a TV step"); with the
  target detached (``detach``) it gained 0.46 dB over D4 in 400 steps (docs/training-log.md,
  "A held-out measurement error"), so mri-ei trains over ``rotate`` with the target
  detached.
* Inpainting, random pixel masks: ``shifts+D4``: no transform leaves such a mask
  invariant, and shifts add many more elements than D4's seven.

Where a recipe draws a fresh mask every step (MRI, inpainting), :func:`moi_loss`
adds the multi-operator term: the group of the family's operators in place of a
group of transforms (``recipe.moi`` weighs it).

``rotate`` turns by quarter turns (exact) and a rotation of at most 45° made of three
shears, each a phase ramp in the Fourier domain (Unser, Thevenaz & Yaroslavsky 1995):
unitary, and exact for band-limited images: there and back costs a CT phantom 63 dB,
against 41 dB for bilinear interpolation, which blurs (``python -m bench.rotation_fidelity``).
It paid off only together with phantoms that the group maps into their own set
(``models.data.sources.PHANTOM_PSF_PX``): on point-sampled phantoms the two
interpolations trained alike (A/B, 300 more CPU steps from the same ct-ei: 33.63 vs
33.76 dB), because a turned aliased raster is no phantom either way (26-29 dB away).

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

__all__ = ["TRANSFORMS", "ei_loss", "moi_loss", "random_transform", "rotation"]

Transform = Callable[[torch.Tensor], torch.Tensor]
TRANSFORMS = ("rot90", "flips", "D4", "shifts", "shifts+D4", "rotate")


def _dihedral(k: int, flip: bool) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        out = torch.rot90(x, k, dims=(-2, -1))
        return torch.flip(out, dims=(-1,)) if flip else out

    return apply


def _shear_rows(x: torch.Tensor, slope: float) -> torch.Tensor:
    """Shift row ``r`` of ``x`` by ``slope * (r - centre)`` pixels along the last axis,
    exactly for a band-limited image: a phase ramp on the row's Fourier transform."""
    h, w = x.shape[-2:]
    freq = torch.fft.fftfreq(w, device=x.device, dtype=x.dtype)
    rows = torch.arange(h, device=x.device, dtype=x.dtype) - h // 2
    ramp = torch.exp(-2j * math.pi * slope * rows[:, None] * freq[None, :])
    return torch.fft.ifft(torch.fft.fft(x, dim=-1) * ramp, dim=-1).real


def _small_rotation(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate by ``|angle| <= 45°`` about pixel ``(H//2, W//2)`` with three shears
    (Unser, Thevenaz & Yaroslavsky 1995). Zero padding to twice the size keeps the
    sheared content from wrapping around."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (w // 2, w // 2, h // 2, h // 2))
    t, s = -math.tan(angle / 2), math.sin(angle)
    out = _shear_rows(padded, t)
    out = _shear_rows(out.transpose(-1, -2), s).transpose(-1, -2)
    out = _shear_rows(out, t)
    return out[..., h // 2 : h // 2 + h, w // 2 : w // 2 + w]


def _quarter_turn(x: torch.Tensor, turns: int) -> torch.Tensor:
    """``turns`` quarter turns about pixel ``(H//2, W//2)`` (the centre of
    :func:`_small_rotation` and of the CT geometry), in its sense of rotation:
    ``torch.rot90`` turns about the array's centre, half a pixel away, so each turn is
    followed by a one-pixel roll."""
    for _ in range(turns % 4):
        x = torch.roll(torch.rot90(x, -1, dims=(-2, -1)), 1, dims=-1)
    return x


def rotation(angle: float) -> Transform:
    """Rotation by any ``angle``: quarter turns (exact) times a three-shear rotation by
    at most 45°."""
    quarter = round(angle / (math.pi / 2))
    rest = angle - quarter * math.pi / 2

    def apply(x: torch.Tensor) -> torch.Tensor:
        return _quarter_turn(_small_rotation(x, rest), quarter)

    return apply


def _shift(dy: int, dx: int) -> Transform:
    return lambda x: torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def random_transform(group: str, generator: torch.Generator, shape=(128, 128)) -> Transform:
    """A random non-identity element of ``group``, drawn from ``generator``."""

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    if group == "rotate":
        return rotation(2 * math.pi * (0.02 + 0.96 * float(torch.rand(1, generator=generator))))
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
    sigma: float = 0.0,
    generator: torch.Generator | None = None,
    detach: bool = False,
) -> torch.Tensor:
    """``‖f(A T x₁ + ε) - T x₁‖²`` averaged over pixels and batch, ``ε ~ N(0, σ²)``.

    ``σ = 0``: the noiseless re-measurement of the EI paper. ``σ`` = the data's noise:
    robust EI's (Chen, Tachella & Davies, CVPR 2022; deepinv's ``EILoss`` default), which
    asks the network to take the noise out of a measurement of its own (noise-free)
    output, so it learns to denoise where the data term alone lets it copy the noise.

    ``detach``: no gradient flows into ``x₁ = f(y)`` through this term (deepinv's
    ``EILoss(no_grad=True)``, after arXiv:2312.11232 on super-resolution). The term only
    teaches ``f`` to reconstruct ``T x₁`` from its measurement; with the gradient, it can
    also lower itself by changing ``x₁``'s null-space content into whatever ``f``
    re-reconstructs most easily (smooth fills). Continued from the shipped mri-ei, the
    detached term gained 0.45 dB where the attached one gained nothing
    (docs/training-log.md, "MRI: no gradient through the EI target")."""
    x2 = transform(x_net.detach() if detach else x_net)
    x3 = recon(physics(x2, sigma, generator))
    return ((x3 - x2) ** 2).mean()


def moi_loss(
    x_net: torch.Tensor, fresh: Physics, recon: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``‖f(A' x₁; A') - x₁‖²``: the multi-operator term (Tachella, Chen & Davies, NeurIPS
    2022). ``A'`` is another operator of the family (another mask) and ``recon``
    reconstructs its measurements. The images are the same whichever mask measures
    them, so what one mask misses another teaches: the EI term with the group of
    operators in place of the group of transforms."""
    return ei_loss(x_net, fresh, recon, lambda x: x)
