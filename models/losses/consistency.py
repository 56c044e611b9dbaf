r"""Measurement consistency and its unbiased noisy version (SURE).

Both are normalised by :math:`\|A\|^2` and the number of measurements, so one
loss scale fits every family.

.. math::
    \mathcal L_{MC} = \frac{1}{m\|A\|^2}\|A f(y) - y\|^2, \qquad
    \mathcal L_{SURE} = \frac{1}{m\|A\|^2}\Big(\|A f(y) - y\|^2 - m\sigma^2
        + 2\sigma^2\, \frac{b^\top (A f(y + \tau b) - A f(y))}{\tau}\Big)

with :math:`b \sim \mathcal N(0, I)` (a Monte-Carlo divergence): SURE is an
unbiased estimate of :math:`\frac{1}{m\|A\|^2}\|A f(y) - A x\|^2` for
Gaussian noise of known :math:`\sigma`, so it does not overfit the noise the
way MC does (Robust EI, Chen, Tachella & Davies, CVPR 2022).

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
    """``‖A x_net - y‖² / (m ‖A‖²)``, averaged over the batch."""
    residual = physics.A(x_net) - y
    return (residual**2).mean() / physics.compiled.norm**2


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
    divergence = (b * (physics.A(recon(y + tau * b)) - ax)).mean() / tau
    value = ((ax - y) ** 2).mean() - sigma**2 + 2 * sigma**2 * divergence
    return value / physics.compiled.norm**2
