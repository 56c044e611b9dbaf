r"""Measurement consistency and its unbiased noisy version (SURE).

Both are normalised per image by :math:`\|A\|_F^2 = \sum_i s_i^2` (the sum of the
squared singular values, :meth:`Physics.frobenius2`):

.. math::
    \mathcal L_{MC} = \frac{\|A f(y) - y\|^2}{\|A\|_F^2}, \qquad
    \mathcal L_{SURE} = \frac{1}{\|A\|_F^2}\Big(\|A f(y) - y\|^2 - m\sigma^2
        + 2\sigma^2\, \frac{b^\top (A f(y + \tau b) - A f(y))}{\tau}\Big)

with :math:`b \sim \mathcal N(0, I)` (a Monte-Carlo divergence). For an error
:math:`e = f(y) - x` spread over the singular vectors, :math:`\|A e\|^2 \approx
\|A\|_F^2 \|e\|^2 / n`, so both read as a per-pixel mean squared error, the scale of
the EI and supervised losses, in every family: one EI weight :math:`\alpha = 1` fits
them all. (Normalising by the largest singular value :math:`\|A\|^2` instead made CT's
data term ~200 times too small against EI, and the network learnt to ignore the data.)
SURE is an unbiased estimate of :math:`\|A f(y) - A x\|^2/\|A\|_F^2` for Gaussian noise
of known :math:`\sigma`, so it does not overfit the noise the way MC does (Robust EI,
Chen, Tachella & Davies, CVPR 2022).

Recorrupted-to-recorrupted (R2R, Pang et al., CVPR 2021) gets the same unbiasedness from
one network pass where SURE needs two (its divergence runs the network again): the
measurement is split by fresh noise :math:`w \sim \mathcal N(0, \sigma^2 I)` into
:math:`y_1 = y + \alpha w`, the network's input, and :math:`y_2 = y - w/\alpha`, its
target. The noise of the two, :math:`n + \alpha w` and :math:`n - w/\alpha`, is
uncorrelated, hence (Gaussian) independent, so

.. math::
    \mathcal L_{R2R} = \frac{1}{\|A\|_F^2}\Big(\|A f(y_1) - y_2\|^2
        - m\sigma^2 (1 + \alpha^{-2})\Big)

is an unbiased estimate of :math:`\|A f(y_1) - A x\|^2/\|A\|_F^2`: the measurement
error of the network on a slightly noisier input (noise :math:`\sigma\sqrt{1+\alpha^2}`).

Example
-------
>>> import torch
>>> from models.physics.operators import Physics
>>> physics = Physics.from_json({"type": "denoising", "shape": [8, 8]})
>>> y = torch.rand(2, 8, 8)
>>> float(mc_loss(y, y, physics))
0.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.physics.operators import Physics

__all__ = ["R2R_ALPHA", "mc_loss", "r2r_loss", "recorrupt", "sure_loss"]

#: R2R's split: the input gets 0.5 of the fresh noise (+12% noise, the mismatch with
#: serving, where the network sees ``y``), the target 2x (the variance of the estimate).
R2R_ALPHA = 0.5


def mc_loss(x_net: torch.Tensor, y: torch.Tensor, physics: Physics) -> torch.Tensor:
    """``‖A x_net - y‖² / ‖A‖_F²``, averaged over the batch."""
    residual = physics.A(x_net) - y
    return (residual**2).sum() / (y.shape[0] * physics.frobenius2())


def sure_loss(
    x_net: torch.Tensor,
    y: torch.Tensor,
    physics: Physics,
    recon: Callable[[torch.Tensor], torch.Tensor],
    sigma: float,
    tau: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Stein's unbiased risk estimate of the measurement error (Gaussian noise ``sigma``)."""
    ax = physics.A(x_net)
    b = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    divergence = (b * (physics.A(recon(y + tau * b)) - ax)).sum() / tau
    value = ((ax - y) ** 2).sum() - y.numel() * sigma**2 + 2 * sigma**2 * divergence
    return value / (y.shape[0] * physics.frobenius2())


def recorrupt(
    y: torch.Tensor,
    sigma: float,
    alpha: float = R2R_ALPHA,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """R2R's pair ``(y + α w, y - w / α)``, ``w ~ N(0, σ²)``: the input and the target."""
    w = sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return y + alpha * w, y - w / alpha


def r2r_loss(
    x_net: torch.Tensor,
    target: torch.Tensor,
    physics: Physics,
    sigma: float,
    alpha: float = R2R_ALPHA,
) -> torch.Tensor:
    """``(‖A x_net - y₂‖² - m σ² (1 + α⁻²)) / ‖A‖_F²`` averaged over the batch, where
    ``x_net = f(y₁)`` and ``(y₁, y₂)`` is :func:`recorrupt`'s pair: unbiased for the
    measurement error of ``x_net``."""
    residual = physics.A(x_net) - target
    noise = target.numel() * sigma**2 * (1 + alpha**-2)
    return ((residual**2).sum() - noise) / (target.shape[0] * physics.frobenius2())
