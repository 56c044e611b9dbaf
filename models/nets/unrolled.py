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

With ``tv_weight > 0`` the last block is followed by the proximal map of a learned
:math:`\lambda\,\mathrm{TV}` (:func:`models.recon.tv.tv_prox`, 20 PDHG iterations,
:math:`\lambda = e^{\theta}` started at ``tv_weight``):

.. math::
    \hat x = \mathrm{prox}_{\lambda \mathrm{TV}}(x_K).

Why: small CNN blocks trained on textured photos leave the measurement noise in flat
regions, where TV removes it. The inpainting networks on the camera's sky: TV 49.1 dB,
the supervised network 43.7, the EI network 42.8; TV-denoising the networks' outputs
after the fact raised the validation mean of the EI network from 35.55 to 36.30 dB and
of the supervised one from 36.07 to 36.68 (docs/training-log.md, "Inpainting: a final TV
step"). Learned end to end, the weight is set by the training loss (SURE + EI needs no
ground truth).
With ``dc_step > 0`` (it needs ``tv_weight``) a data-consistency stage follows: one
correction through the family's pseudo-inverse (for CT the filtered back-projection, a
ramp-preconditioned gradient step), with a learned step α, then a second learned TV step:

.. math::
    \hat x \leftarrow \mathrm{prox}_{\lambda_2 \mathrm{TV}}\big(\hat x
    + \alpha A^\dagger (y - A \hat x)\big).

Why: five gradient steps and the blocks leave CT's output off the measurements. The
service's TV fits them closer (SURE, an unbiased estimate of the measurement-domain
error, 2.44e-5 for TV against 3.93e-5 for ct-ei and 3.91e-5 for ct-sup, 8 validation
images), though the networks are ahead on the null space. After the fact on the shipped
ct-ei (16 validation images, ground truth only to measure; runs of docs/training-log.md
"CT: one filtered-back-projection correction"): 47.33 -> 48.31 dB with α = 0.5 and
λ₂ = 0.004, as much as five conjugate-gradient iterations on the proximal map of the data
term (MoDL, Aggarwal et al. 2019; 48.40) for two products with A or Aᵀ instead of twelve:
served, each product is ~30 ms of a CT request's eight passes (the D4 score).

Isotropic TV on the pixel grid is close to, not exactly, rotation invariant, so the step
is for the plain CNN networks; the p4m ones stay exactly equivariant without it.

:class:`GroupAveraged` is the export option that makes any trained network
exactly equivariant to :math:`D_4` by averaging over the group (the Reynolds
operator), at the price of :math:`|G| = 8` passes:

.. math::
    f_G(y; A) = \frac{1}{|G|} \sum_{g} T_g^{-1} f\big(y; A T_g^{-1}\big).

``y`` is also a measurement of :math:`T_g x` through :math:`A T_g^{-1}`, so each
term reconstructs the rotated or flipped image and turns it back. Only the
operator is wrapped (:math:`(A T_g^{-1})^\dagger = T_g A^\dagger`, as
:math:`T_g` permutes pixels), so it works for every family without touching its
parameters. Substituting :math:`g \to g h` shows
:math:`f_G(y; A T_h^{-1}) = T_h f_G(y; A)`: measuring a rotated scene with the
rotated operator (for inpainting, the mask; for denoising, nothing) returns
the rotated reconstruction, up to float error.

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

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.nets.blocks import D4_INVERSE, d4_transforms
from models.physics.functional import adjoint, forward, pinv
from models.recon.tv import tv_prox

__all__ = ["GroupAveraged", "Unrolled"]

Transform = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Unrolled(nn.Module):
    """``K`` gradient steps on the data term, each followed by a learned block."""

    def __init__(
        self,
        kernel: str,
        blocks: Sequence[nn.Module],
        step: float = 1.0,
        tv_weight: float = 0.0,
        dc_step: float = 0.0,
    ) -> None:
        super().__init__()
        if tv_weight < 0:
            raise ValueError(f"tv_weight is a TV weight: >= 0, got {tv_weight}")
        if dc_step < 0 or (dc_step and not tv_weight):
            raise ValueError(
                f"dc_step is a step size >= 0 and needs tv_weight > 0 (the TV step after "
                f"it), got dc_step={dc_step}, tv_weight={tv_weight}"
            )
        self.kernel = kernel
        self.blocks = nn.ModuleList(blocks)
        # One learned step size per stage, started at the stable 1/‖Ã‖² = 1.
        self.steps = nn.Parameter(torch.full((len(blocks),), step))
        # A resumed run may add it to a checkpoint without it: models.train.loop starts it
        # fresh and reads the saved optimiser state by the parameters the checkpoint has.
        self.log_tv = nn.Parameter(torch.tensor(math.log(tv_weight))) if tv_weight else None
        # The data-consistency stage: its step α and the weight of the TV step after it,
        # both learned (log scale), started at ``dc_step`` and ``tv_weight``.
        self.log_dc = nn.Parameter(torch.tensor(math.log(dc_step))) if dc_step else None
        self.log_dc_tv = nn.Parameter(torch.tensor(math.log(tv_weight))) if dc_step else None
        # Set by models.train for ``precision="bf16"``: the blocks then run under autocast to
        # this dtype while training (not in eval, validation or export, which stay float32).
        self.train_dtype: torch.dtype | None = None

    def forward(
        self,
        y: torch.Tensor,
        params: dict[str, torch.Tensor],
        inv_norm: torch.Tensor,
        frame: tuple[Transform, Transform] = (_identity, _identity),
    ) -> torch.Tensor:
        """Reconstruct from ``y``; with ``frame = (T, T⁻¹)`` the operator is ``A T⁻¹``
        and the result is the reconstruction of ``T x`` (:class:`GroupAveraged`)."""
        to_frame, from_frame = frame
        scale_x = inv_norm.reshape(-1, 1, 1)
        scale_y = inv_norm.reshape(-1, *([1] * (y.dim() - 1)))
        x = to_frame(pinv(self.kernel, y, params))
        for k, block in enumerate(self.blocks):
            residual = (forward(self.kernel, from_frame(x), params) - y) * scale_y
            x = x - self.steps[k] * to_frame(adjoint(self.kernel, residual, params)) * scale_x
            x = self._denoise(block, x)
        if self.log_tv is not None:
            x = tv_prox(x, self.log_tv.exp())
        if self.log_dc is not None and self.log_dc_tv is not None:
            x = tv_prox(self._data_consistency(x, y, params, frame), self.log_dc_tv.exp())
        return x

    def _data_consistency(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        params: dict[str, torch.Tensor],
        frame: tuple[Transform, Transform],
    ) -> torch.Tensor:
        """``x + α A†(y - A x)``, in the frame. The pseudo-inverse maps measurements to
        image units, so no Ã scaling (unlike the gradient steps)."""
        to_frame, from_frame = frame
        assert self.log_dc is not None
        residual = y - forward(self.kernel, from_frame(x), params)
        return x + self.log_dc.exp() * to_frame(pinv(self.kernel, residual, params))

    def _denoise(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.train_dtype):
            return block(x)
        # Only the convolutions change dtype: a block is x + f(x), and the sum with the
        # float32 x stays float32, as do the data steps and the TV step around it.
        with torch.autocast(x.device.type, dtype=self.train_dtype):
            return block(x).float()


class GroupAveraged(nn.Module):
    """``net`` averaged over :math:`D_4` (the Reynolds operator): exactly equivariant."""

    def __init__(self, net: Unrolled) -> None:
        super().__init__()
        self.net = net
        transforms = d4_transforms()
        self.frames = [(t, transforms[D4_INVERSE[g]]) for g, t in enumerate(transforms)]

    def forward(
        self, y: torch.Tensor, params: dict[str, torch.Tensor], inv_norm: torch.Tensor
    ) -> torch.Tensor:
        passes = [back(self.net(y, params, inv_norm, (to, back))) for to, back in self.frames]
        return torch.stack(passes).mean(dim=0)
