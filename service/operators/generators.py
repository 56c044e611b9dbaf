"""Deterministic generators for operator parameters.

Each generator is a documented recipe on ``numpy.random.default_rng(seed)``
(PCG64), so a client can rebuild the exact mask, kernel, matrix or coil maps
the service used from the same JSON object. The recipes are part of the API:
changing one changes what an existing request means.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "birdcage_coils",
    "cartesian_mask",
    "centred_dft_matrix",
    "dct_matrix",
    "dft_matrix",
    "gaussian_kernel",
    "gaussian_matrix",
    "random_mask",
    "structured_sensing",
    "uniform_angles",
]


def random_mask(shape: tuple[int, int], keep: float, seed: int) -> np.ndarray:
    """``rng.random((H, W)) < keep`` as float32 (1 = observed)."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < keep).astype(np.float32)


def gaussian_kernel(sigma: float, size: int) -> np.ndarray:
    """``exp(-(i² + j²) / 2σ²)`` on a ``size²`` grid centred at ``size // 2``, summing to 1."""
    r = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def cartesian_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float, seed: int
) -> np.ndarray:
    """Sampled k-space columns (fastMRI-style, exact counts).

    ``n = max(nc, round(W / acceleration))`` columns are kept: the
    ``nc = round(W * center_fraction)`` columns starting at ``W//2 - nc//2``,
    plus ``n - nc`` others drawn by ``rng.choice(rest, n - nc, replace=False)``
    where ``rest`` lists the remaining column indices in increasing order.
    """
    height, width = shape
    rng = np.random.default_rng(seed)
    n_center = round(width * center_fraction)
    n_total = max(n_center, round(width / acceleration), 1)
    start = width // 2 - n_center // 2
    center = np.arange(start, start + n_center)
    rest = np.setdiff1d(np.arange(width), center)
    chosen = rng.choice(rest, size=min(n_total - n_center, rest.size), replace=False)
    columns = np.zeros(width, dtype=np.float32)
    columns[center] = 1.0
    columns[chosen] = 1.0
    return np.broadcast_to(columns, (height, width)).copy()


def birdcage_coils(count: int, shape: tuple[int, int], radius: float = 1.5) -> np.ndarray:
    """Birdcage coil sensitivities, complex64 ``[C, H, W]`` with root-sum-of-squares 1.

    Coil ``c`` sits at ``radius * (cos φ_c, sin φ_c)``, ``φ_c = 2πc/C``, in
    coordinates where the image spans [-1, 1]; its map is ``exp(i(θ - φ_c)) / r``
    with ``r, θ`` the distance and angle from the coil (the model of
    ``sigpy.mri.birdcage_maps``).
    """
    height, width = shape
    y = (np.arange(height) - height / 2.0) / (height / 2.0)
    x = (np.arange(width) - width / 2.0) / (width / 2.0)
    phi = 2.0 * np.pi * np.arange(count) / count
    dx = x[None, None, :] - radius * np.cos(phi)[:, None, None]
    dy = y[None, :, None] - radius * np.sin(phi)[:, None, None]
    maps = np.exp(1j * (np.arctan2(dx, -dy) - phi[:, None, None])) / np.hypot(dx, dy)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps.astype(np.complex64)


def uniform_angles(count: int) -> np.ndarray:
    """``count`` view angles in degrees, ``k * 180 / count`` for k = 0..count-1."""
    return np.arange(count, dtype=np.float64) * (180.0 / count)


def gaussian_matrix(m: int, n: int, seed: int) -> np.ndarray:
    """``rng.standard_normal((m, n)) / sqrt(m)`` as float32 (columns of unit expected norm)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, n)) / np.sqrt(m)).astype(np.float32)


def structured_sensing(shape: tuple[int, int], m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random signs and selected coefficients of the structured sensing transform.

    ``y = (C_H (s ⊙ x) C_Wᵀ).flat[select]`` with orthonormal DCT-II matrices
    ``C``; ``s = where(rng.random((H, W)) < 0.5, -1, 1)`` then
    ``select = rng.permutation(H * W)[:m]``. Rows are orthonormal, so
    ``A Aᵀ = I`` and ``‖A‖ = 1``.
    """
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)
    select = rng.permutation(shape[0] * shape[1])[:m].astype(np.int64)
    return signs, select


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C[k, j] = a_k cos(π (2j + 1) k / 2n)``, float32."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c.astype(np.float32)


def dft_matrix(n: int) -> np.ndarray:
    """Unitary DFT ``F[j, k] = exp(-2πi jk / n) / sqrt(n)`` as float32 ``[2, n, n]`` (re, im)."""
    f = np.fft.fft(np.eye(n), axis=0, norm="ortho")
    return np.stack([f.real, f.imag]).astype(np.float32)


def centred_dft_matrix(n: int) -> np.ndarray:
    """Matrix of ``fftshift(fft(ifftshift(v), norm="ortho"))``, float32 ``[2, n, n]``."""
    eye = np.fft.ifftshift(np.eye(n), axes=0)
    f = np.fft.fftshift(np.fft.fft(eye, axis=0, norm="ortho"), axes=0)
    return np.stack([f.real, f.imag]).astype(np.float32)
