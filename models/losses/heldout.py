r"""Held-out measurement error: a ground-truth-free estimate of a network's error where
its operator cannot see.

A measurement ``y = A x + n`` of a masked family (MRI's Cartesian columns, inpainting's
pixels) is split: a random part ``H`` of what it measured is held out, the network
reconstructs from the rest (operator ``A_K``, mask ``K = Ω \ H``), and its prediction is
compared with ``y`` on ``H``:

.. math::
    \mathcal E_H = \operatorname{mean}_{i \in H} \big((A \hat x_K)_i - y_i\big)^2 - \sigma^2,
    \qquad \hat x_K = f(A_K x + n_K)

``x̂_K`` never saw ``n_H``, so the noise adds exactly ``σ²`` in expectation and
``E_H`` is an unbiased estimate of ``mean_H ((A x̂_K)_i - (A x)_i)²``: the error on
entries that lie in the null space of ``A_K``, which is what EI training is meant to
learn. The target is measured data, not the network's own output, which is what the
EI, MOI and equivariance-score criteria compare against; those prefer networks whose
outputs they re-reconstruct easily, and on MRI and inpainting they ranked a 0.65 and
0.12 dB better network below a worse one, where this error ranks every pair the right
way (docs/training-log.md, "A held-out measurement error").

Self-supervised MRI splits measurements the same way to train (SSDU, Yaman et al.
2020); here it validates: it says which of two training methods or runs reconstructs
better, from validation measurements alone, at a slightly higher acceleration than
served (a fifth of the eligible entries is held out).

What may be held out: for MRI the sampled columns outside the fully sampled centre
(every mask of the family keeps its centre, so a network never sees one without it),
for inpainting the kept pixels. CT's networks are tied to their number of views, so
nothing can be held out there.

Example
-------
>>> import numpy as np, torch
>>> from models.physics.operators import Physics
>>> physics = Physics.from_json({"type": "inpainting", "shape": [8, 8],
...                              "mask": {"random": {"keep": 0.5, "seed": 0}}})
>>> kept, held = split(physics, np.random.default_rng(0))
>>> bool((held * torch.from_numpy(kept.compiled.params["mask"])).sum() == 0)
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from models.physics.operators import Physics

__all__ = ["HELDOUT_KERNELS", "HELD_OUT", "heldout_error", "split"]

#: Share of the eligible measured entries held out.
HELD_OUT = 0.2
#: Operator kernels whose measurements can be split.
HELDOUT_KERNELS = ("mri", "inpainting")


def _centre_run(columns: np.ndarray, centre: int) -> np.ndarray:
    """The run of consecutive sampled ``columns`` that contains ``centre`` (empty if none)."""
    if centre not in columns:
        return columns[:0]
    run = [centre]
    while run[0] - 1 in columns:
        run.insert(0, run[0] - 1)
    while run[-1] + 1 in columns:
        run.append(run[-1] + 1)
    return np.asarray(run)


def split(
    physics: Physics, rng: np.random.Generator, fraction: float = HELD_OUT
) -> tuple[Physics, torch.Tensor]:
    """``(A_K, H)``: ``physics`` without a random ``fraction`` of its eligible measured
    entries, and the held-out mask ``H`` (image-shaped, 1 where held out)."""
    if physics.kernel not in HELDOUT_KERNELS:
        raise ValueError(
            f"no held-out split for {physics.kernel!r} operators; known: {HELDOUT_KERNELS}"
        )
    mask = physics.compiled.params["mask"]
    if physics.kernel == "mri":
        sampled = np.flatnonzero(mask.max(axis=0) > 0)
        eligible = np.setdiff1d(sampled, _centre_run(sampled, mask.shape[1] // 2))
        held = np.zeros(mask.shape, np.float32)
        columns = rng.choice(eligible, size=max(1, round(fraction * len(eligible))), replace=False)
        held[:, columns] = mask[:, columns] > 0
    else:
        eligible = np.flatnonzero(mask > 0)
        pixels = rng.choice(eligible, size=max(1, round(fraction * len(eligible))), replace=False)
        held = np.zeros(mask.shape, np.float32)
        held.reshape(-1)[pixels] = 1
    kept = np.where(held > 0, 0, mask).astype(np.float32)
    # ``source`` is the spec of the whole mask: this operator has none.
    compiled = dataclasses.replace(
        physics.compiled, params={**physics.compiled.params, "mask": kept}, source=None
    )
    return Physics(compiled, physics.dtype).to(physics.device), torch.from_numpy(held).to(
        physics.device
    )


def heldout_error(
    x_kept: torch.Tensor, y: torch.Tensor, physics: Physics, held: torch.Tensor, sigma: float
) -> torch.Tensor:
    """``mean_H ((A x_kept)_i - y_i)² - σ²`` over the held-out real components of ``y``
    (MRI's real and imaginary parts both), the batch pooled; ``x_kept`` reconstructed
    from ``y`` without ``H``."""
    ax = physics.A(x_kept)
    weight = held.expand_as(ax)  # MRI's [B, 2, H, W], inpainting's [B, H, W]
    return ((ax - y) ** 2 * weight).sum() / weight.sum() - sigma**2
