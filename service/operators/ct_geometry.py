"""Parallel-beam CT projector as gather-only sparse matrices (pure numpy).

Conventions
-----------
* Image ``x`` is ``[H, W]`` with ``H == W`` (CT needs a square grid), pixel
  side length 1. Flat pixel index is ``row * W + col``.
* Sinogram ``y`` is ``[A, D]`` (angle-major, one row per projection angle),
  flat measurement index ``angle * D + det``. Values are line integrals in
  pixel units: a ray crossing ``n`` pixels of value 1 gives ``~n``.
* Angles are in degrees, normally in ``[0, 180)``; see :func:`uniform_angles`.

Forward model (matches ``skimage.transform.radon(x, theta, circle=True).T``)
---------------------------------------------------------------------------
The rotation centre is ``c = H // 2`` (skimage's convention). For angle
``theta``, detector ``d`` has signed offset ``s_d = d - D // 2`` from the
centre (unit detector spacing) and the ray is sampled at ``H`` points with
along-ray offsets ``u_t = t - c``, ``t = 0..H-1`` (unit step)::

    row(d, t) = c - sin(theta) * s_d + cos(theta) * u_t
    col(d, t) = c + cos(theta) * s_d + sin(theta) * u_t
    y[theta, d] = sum_t bilinear(x, row(d, t), col(d, t))

``bilinear`` uses the four surrounding pixels with the usual weights and treats
everything outside the image as 0 (skimage ``warp(order=1, mode='constant',
cval=0)``). With ``D == H`` this is exactly skimage's radon with
``circle=True``: it rotates the image about ``(c, c)`` with the inverse map
above and sums the rotated image along rows.

Because the model is linear, ``y = A x`` with a sparse ``A`` of shape
``[A*D, H*W]``. Duplicate (ray, pixel) contributions from neighbouring samples
are merged by summing their weights.

Storage (padded ELL, gather-only)
---------------------------------
* ``fwd_index/fwd_weight [A, D, K1]``: row ``(a, d)`` of ``A``,
  ``y[a, d] = sum_k fwd_weight[a, d, k] * x.flat[fwd_index[a, d, k]]``.
* ``adj_index/adj_weight [H, W, K2]``: row ``(i, j)`` of ``A^T``,
  ``x[i, j] = sum_k adj_weight[i, j, k] * y.flat[adj_index[i, j, k]]``.

Padding entries have index 0 and weight 0, so a torch/ONNX graph can apply
both ``A`` and ``A^T`` with ``gather`` + multiply + sum, no scatter. Both
layouts hold bit-identical float32 weights, so ``A^T`` is the exact transpose.

Filtered back-projection
------------------------
Kak & Slaney's spatial-domain discrete Ram-Lak filter for unit detector
spacing::

    h[0] = 1/4,  h[n] = -1 / (pi^2 n^2) for odd n,  h[n] = 0 for even n != 0

applied as a linear (zero-padded) convolution along detectors via the
Toeplitz matrix ``ramp[i, j] = h[i - j]`` (``q = y @ ramp.T``), then
``x_fbp = (pi / A) * A^T q``. ``A^T`` is a bilinear-interpolating
back-projector, so this is the discrete form of
``f(x) = integral_0^pi q_theta(<x, n_theta>) dtheta`` with ``dtheta = pi / A``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CTGeometry",
    "ct_adjoint",
    "ct_fbp",
    "ct_forward",
    "ct_geometry",
    "ct_norm",
    "uniform_angles",
]

# Bilinear weights below this are round-off from sample points that sit on a
# pixel centre (e.g. 1 - (1 - 1e-16)); keeping them would only inflate K1/K2.
# Dropping them changes y by far less than float32 resolution.
_WEIGHT_EPS = 1e-9

# Safety margin on the power-method estimate, which converges from below.
_NORM_MARGIN = 1.02

_CACHE_SIZE = 16


@dataclass(frozen=True, eq=False)
class CTGeometry:
    """Sparse parallel-beam projector in two padded-ELL layouts.

    ``eq=False`` keeps identity hashing (fields are arrays), which lets
    :func:`ct_norm` cache per geometry object.
    """

    fwd_index: npt.NDArray[np.int64]  # [A, D, K1] flat pixel index row*W+col
    fwd_weight: npt.NDArray[np.float32]  # [A, D, K1] (0 on padding)
    adj_index: npt.NDArray[np.int64]  # [H, W, K2] flat measurement index a*D+d
    adj_weight: npt.NDArray[np.float32]  # [H, W, K2] (0 on padding)
    ramp: npt.NDArray[np.float32]  # [D, D] Ram-Lak Toeplitz, apply y @ ramp.T
    fbp_scale: float  # pi / A

    @property
    def n_angles(self) -> int:
        return int(self.fwd_index.shape[0])

    @property
    def n_detectors(self) -> int:
        return int(self.fwd_index.shape[1])

    @property
    def height(self) -> int:
        return int(self.adj_index.shape[0])

    @property
    def width(self) -> int:
        return int(self.adj_index.shape[1])


def uniform_angles(count: int) -> npt.NDArray[np.float64]:
    """``count`` equispaced angles in degrees over ``[0, 180)``."""
    if count < 1:
        raise ValueError(f"angle count must be >= 1, got {count}")
    return np.arange(count, dtype=np.float64) * 180.0 / count


def ct_geometry(
    angles_deg: npt.ArrayLike,
    height: int,
    width: int,
    detectors: int | None = None,
) -> CTGeometry:
    """Build (or fetch from cache) the projector for a square image.

    Angles are rounded to 1e-9 degrees for the cache key and the build, so
    tiny float differences map to the same geometry. Returned arrays are
    read-only because the object is shared between callers.
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.size == 0:
        raise ValueError("need at least one projection angle")
    if not np.all(np.isfinite(angles)):
        raise ValueError("projection angles must be finite")
    height, width = _positive_int(height, "height"), _positive_int(width, "width")
    if height != width:
        raise ValueError(
            f"CT geometry needs a square image (rotation about the centre), "
            f"got height={height}, width={width}"
        )
    n_det = height if detectors is None else _positive_int(detectors, "detectors")
    key = tuple(np.round(angles, 9).tolist())
    return _ct_geometry_cached(key, height, width, n_det)


def ct_forward(geom: CTGeometry, x: npt.ArrayLike) -> np.ndarray:
    """Reference ``A x``: ``[..., H, W] -> [..., A, D]``."""
    x = np.asarray(x)
    _check_trailing(x.shape, (geom.height, geom.width), "image")
    flat = x.reshape(*x.shape[:-2], geom.height * geom.width)
    return np.sum(flat[..., geom.fwd_index] * geom.fwd_weight, axis=-1)


def ct_adjoint(geom: CTGeometry, y: npt.ArrayLike) -> np.ndarray:
    """Reference ``A^T y``: ``[..., A, D] -> [..., H, W]``."""
    y = np.asarray(y)
    _check_trailing(y.shape, (geom.n_angles, geom.n_detectors), "sinogram")
    flat = y.reshape(*y.shape[:-2], geom.n_angles * geom.n_detectors)
    return np.sum(flat[..., geom.adj_index] * geom.adj_weight, axis=-1)


def ct_fbp(geom: CTGeometry, y: npt.ArrayLike) -> np.ndarray:
    """Filtered back-projection: ``(pi / A) * A^T (y @ ramp.T)``."""
    y = np.asarray(y)
    _check_trailing(y.shape, (geom.n_angles, geom.n_detectors), "sinogram")
    return geom.fbp_scale * ct_adjoint(geom, y @ geom.ramp.T)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def ct_norm(geom: CTGeometry, iterations: int = 30) -> float:
    """Power-method estimate of ``||A||_2``, inflated by 2 %.

    Starts from the all-ones image: ``A`` is entry-wise non-negative, so the
    top singular vector is non-negative (Perron-Frobenius) and overlaps the
    ones vector strongly, which makes 30 iterations plenty. Power iteration
    approaches ``sigma_max`` from below, hence the margin (step sizes derived
    from it stay safe). Cached per geometry object.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    v = np.ones((geom.height, geom.width), dtype=np.float64)
    v /= np.linalg.norm(v)
    sigma_sq = 0.0
    for _ in range(iterations):
        w = ct_adjoint(geom, ct_forward(geom, v))
        sigma_sq = float(np.linalg.norm(w))  # ||A^T A v|| with ||v|| = 1
        if sigma_sq == 0.0:
            return 0.0
        v = w / sigma_sq
    return _NORM_MARGIN * float(np.sqrt(sigma_sq))


# --------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _AngleBlock:
    """Merged entries of one angle plus their slots in both ELL layouts."""

    ray: npt.NDArray[np.int64]  # global ray id a*D + d
    pixel: npt.NDArray[np.int64]
    weight: npt.NDArray[np.float64]
    fwd_slot: npt.NDArray[np.int64]  # position within the ray's row
    adj_slot: npt.NDArray[np.int64]  # position within the pixel's row


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ct_geometry_cached(
    angles_key: tuple[float, ...], height: int, width: int, detectors: int
) -> CTGeometry:
    n_angles, n_pix = len(angles_key), height * width
    n_rays = n_angles * detectors

    # Slots are assigned angle by angle so every sort stays small (one angle's
    # entries) instead of one global sort over all A*D*K1 entries.
    k1 = 1  # K >= 1 so no array has a zero-size axis (ONNX exporters dislike those)
    pix_fill = np.zeros(n_pix, dtype=np.int64)
    blocks = []
    for a, theta in enumerate(np.deg2rad(np.asarray(angles_key, dtype=np.float64))):
        det, pixel, weight = _merged_angle_entries(float(theta), height, width, detectors)
        fwd_slot, det_counts = _slots_in_groups(det, detectors)
        adj_slot, pix_counts = _slots_in_groups(pixel, n_pix)
        # Earlier angles have smaller ray ids, so offsetting by what previous
        # angles filled keeps each A^T row sorted by measurement index.
        adj_slot += pix_fill[pixel]
        pix_fill += pix_counts
        k1 = max(k1, int(det_counts.max(initial=0)))
        blocks.append(_AngleBlock(det + a * detectors, pixel, weight, fwd_slot, adj_slot))

    k2 = max(int(pix_fill.max(initial=0)), 1)
    fwd_index = np.zeros((n_rays, k1), dtype=np.int64)
    fwd_weight = np.zeros((n_rays, k1), dtype=np.float32)
    adj_index = np.zeros((n_pix, k2), dtype=np.int64)
    adj_weight = np.zeros((n_pix, k2), dtype=np.float32)
    for blk in blocks:
        fwd_index[blk.ray, blk.fwd_slot] = blk.pixel
        fwd_weight[blk.ray, blk.fwd_slot] = blk.weight
        adj_index[blk.pixel, blk.adj_slot] = blk.ray
        adj_weight[blk.pixel, blk.adj_slot] = blk.weight

    geom = CTGeometry(
        fwd_index=fwd_index.reshape(n_angles, detectors, k1),
        fwd_weight=fwd_weight.reshape(n_angles, detectors, k1),
        adj_index=adj_index.reshape(height, width, k2),
        adj_weight=adj_weight.reshape(height, width, k2),
        ramp=_ramlak_matrix(detectors),
        fbp_scale=float(np.pi / n_angles),
    )
    for arr in (geom.fwd_index, geom.fwd_weight, geom.adj_index, geom.adj_weight, geom.ramp):
        arr.flags.writeable = False
    return geom


def _merged_angle_entries(
    theta: float, height: int, width: int, detectors: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Non-zero (detector, pixel, weight) entries of one angle, sorted by
    detector then pixel, with duplicate (detector, pixel) pairs summed."""
    n_pix = height * width
    det, pixel, weight = _angle_entries(theta, height, width, detectors)
    # Samples t and t+1 of one ray often touch the same pixel.
    uniq, inverse = np.unique(det * n_pix + pixel, return_inverse=True)
    merged = np.asarray(
        np.bincount(inverse.reshape(-1), weights=weight, minlength=uniq.size), dtype=np.float64
    )
    return uniq // n_pix, uniq % n_pix, merged


def _slots_in_groups(
    group: npt.NDArray[np.int64], n_groups: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rank of each entry among entries of the same group, in input order.

    Returns ``(slot, counts)``; the stable sort preserves input order inside a
    group, so rows come out in the same order as the entries were given.
    """
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    slot = np.empty_like(group)
    slot[order] = np.arange(group.size) - np.repeat(starts, counts)
    return slot, counts


def _angle_entries(
    theta: float, height: int, width: int, detectors: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Unmerged bilinear entries (detector, pixel, weight) for one angle."""
    c = height // 2
    cos_a, sin_a = np.cos(theta), np.sin(theta)
    # Detector offset s_d = d - D//2; written as the output column u = s_d + c
    # so the arithmetic mirrors skimage's affine matrix for D == H.
    u = (np.arange(detectors) - detectors // 2 + c).astype(np.float64)[:, None]
    v = np.arange(height, dtype=np.float64)[None, :]  # along-ray sample t
    col = cos_a * u + sin_a * v - c * (cos_a + sin_a - 1.0)  # [D, H]
    row = -sin_a * u + cos_a * v - c * (cos_a - sin_a - 1.0)

    r0 = np.floor(row)
    c0 = np.floor(col)
    dr = row - r0
    dc = col - c0
    r0 = r0.astype(np.int64)
    c0 = c0.astype(np.int64)

    # Four neighbours per sample, stacked on a trailing axis.
    nr = np.stack([r0, r0, r0 + 1, r0 + 1], axis=-1)
    nc = np.stack([c0, c0 + 1, c0, c0 + 1], axis=-1)
    nw = np.stack([(1 - dr) * (1 - dc), (1 - dr) * dc, dr * (1 - dc), dr * dc], axis=-1)
    det = np.broadcast_to(np.arange(detectors, dtype=np.int64)[:, None, None], nw.shape)

    # Outside-image neighbours read cval=0 in skimage, i.e. contribute nothing.
    keep = (nr >= 0) & (nr < height) & (nc >= 0) & (nc < width) & (nw > _WEIGHT_EPS)
    return det[keep], nr[keep] * width + nc[keep], nw[keep]


def _ramlak_matrix(detectors: int) -> npt.NDArray[np.float32]:
    """Toeplitz ``ramp[i, j] = h[i - j]`` of Kak & Slaney's discrete Ram-Lak."""
    n = np.arange(-(detectors - 1), detectors)
    h = np.zeros(n.shape, dtype=np.float64)
    h[n == 0] = 0.25
    odd = (n % 2) != 0
    h[odd] = -1.0 / (np.pi**2 * n[odd].astype(np.float64) ** 2)
    offset = np.arange(detectors)[:, None] - np.arange(detectors)[None, :]
    return h[offset + detectors - 1].astype(np.float32)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_trailing(shape: tuple[int, ...], expected: tuple[int, int], what: str) -> None:
    if len(shape) < 2 or tuple(shape[-2:]) != expected:
        raise ValueError(f"{what} must have trailing shape {expected}, got {shape}")
