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

__all__ = ["mc_loss", "sure_loss"]


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
