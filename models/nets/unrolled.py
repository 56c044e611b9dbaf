r"""Unrolled proximal-gradient reconstruction network.

Starting from the pseudo-inverse, each of ``K`` stages takes a gradient step
on the normalised data term and applies a learned denoising block:

.. math::
    x_0 = A^\dagger y, \qquad
    x_{k+1} = D_k\big(x_k - \eta_k \tilde A^\top (\tilde A x_k - \tilde y)\big),
    \qquad \tilde A = A/\|A\|,\ \tilde y = y/\|A\|.

The operator enters only through the family's kernels and their parameter
tensors, so one trained network serves every mask, angle set or coil map of
its family and exports to a single ONNX graph ``(y, params, inv_norm) -> x``
(the contract of ``service/engine.py`` for ``kind = "learned"``). Starting at
``A† y`` and stepping on the data term keeps the network close to a classical
solver, which is what lets a small network train in minutes on a CPU
(../shared/DATA.md, second probe).

Example
-------
>>> import torch
>>> from models.physics.operators import Physics
>>> physics = Physics.from_json({"type": "inpainting", "shape": [16, 16],
...                              "mask": {"random": {"keep": 0.5, "seed": 0}}})
>>> net = Unrolled("inpainting", [torch.nn.Identity()] * 2)
>>> y = physics.A(torch.rand(2, 16, 16))
>>> net(y, physics.params(2), torch.ones(2)).shape
torch.Size([2, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.physics.functional import adjoint, forward, pinv

__all__ = ["Unrolled"]


class Unrolled(nn.Module):
    """``K`` gradient steps on the data term, each followed by a learned block."""

    def __init__(self, kernel: str, blocks: Sequence[nn.Module], step: float = 1.0) -> None:
        super().__init__()
        self.kernel = kernel
        self.blocks = nn.ModuleList(blocks)
        # One learned step size per stage, started at the stable 1/‖Ã‖² = 1.
        self.steps = nn.Parameter(torch.full((len(blocks),), step))

    def forward(
        self, y: torch.Tensor, params: dict[str, torch.Tensor], inv_norm: torch.Tensor
    ) -> torch.Tensor:
        scale_x = inv_norm.reshape(-1, 1, 1)
        scale_y = inv_norm.reshape(-1, *([1] * (y.dim() - 1)))
        x = pinv(self.kernel, y, params)
        for k, block in enumerate(self.blocks):
            residual = (forward(self.kernel, x, params) - y) * scale_y
            x = x - self.steps[k] * adjoint(self.kernel, residual, params) * scale_x
            x = block(x)
        return x
