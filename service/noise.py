"""Seeded Gaussian measurement noise for POST /v1/simulate (DESIGN.md §6).

``n = rng.standard_normal(shape)`` with ``rng = np.random.default_rng(seed)``
for real measurements; complex ones draw the real parts then the imaginary
parts (``standard_normal((2, *shape))``), each of standard deviation sigma.
Where the operator has a sampling mask (inpainting, mri, mri_multicoil) the
noise is zeroed off the mask, so unobserved entries stay exactly 0.
"""

from __future__ import annotations

import numpy as np

from service.operators.compile import CompiledOperator
from service.operators.spec import NoiseSpec

__all__ = ["add_noise"]


def add_noise(y: np.ndarray, noise: NoiseSpec | None, op: CompiledOperator) -> np.ndarray:
    """``y + sigma * n`` in the wire layout (float32 or complex64)."""
    if noise is None or noise.sigma == 0.0:
        return y
    rng = np.random.default_rng(noise.seed)
    if np.iscomplexobj(y):
        re, im = rng.standard_normal((2, *y.shape))
        n = re + 1j * im
    else:
        n = rng.standard_normal(y.shape)
    mask = op.params.get("mask")
    if mask is not None:
        n = n * (mask != 0)  # broadcasts over coils: mask is [H, W]
    return (y + noise.sigma * n).astype(y.dtype)
