"""Tests for the gather-only parallel-beam CT projector."""

from __future__ import annotations

import ast
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from service.operators import ct_geometry as ctg
from service.operators.ct_geometry import (
    CTGeometry,
    ct_adjoint,
    ct_fbp,
    ct_forward,
    ct_geometry,
    ct_norm,
    uniform_angles,
)

IRREGULAR_ANGLES = np.array([0.0, 17.3, 45.0, 90.0, 133.7])


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def circle_mask(n: int) -> np.ndarray:
    """skimage's reconstruction circle: radius n // 2 about (n // 2, n // 2)."""
    c = n // 2
    i, j = np.ogrid[:n, :n]
    return ((i - c) ** 2 + (j - c) ** 2) <= c**2


def phantom(n: int) -> np.ndarray:
    x = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    return x * circle_mask(n)


def smooth_bump(n: int, radius: float) -> np.ndarray:
    c = n // 2
    i, j = np.ogrid[:n, :n]
    r2 = ((i - c) ** 2 + (j - c) ** 2) / radius**2
    return np.clip(1.0 - r2, 0.0, None) ** 2


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def skimage_sinogram(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """skimage radon in our [A, D] layout."""
    return radon(x, theta=angles, circle=True).T


def dense_from_fwd(g: CTGeometry) -> np.ndarray:
    mat = np.zeros((g.n_angles * g.n_detectors, g.height * g.width))
    rows = np.broadcast_to(
        np.arange(mat.shape[0]).reshape(g.n_angles, g.n_detectors, 1), g.fwd_index.shape
    )
    np.add.at(mat, (rows.ravel(), g.fwd_index.ravel()), g.fwd_weight.ravel())
    return mat


def dense_from_adj(g: CTGeometry) -> np.ndarray:
    mat = np.zeros((g.height * g.width, g.n_angles * g.n_detectors))
    rows = np.broadcast_to(np.arange(mat.shape[0]).reshape(g.height, g.width, 1), g.adj_index.shape)
    np.add.at(mat, (rows.ravel(), g.adj_index.ravel()), g.adj_weight.ravel())
    return mat


def reference_forward(x: np.ndarray, angles_deg: np.ndarray, detectors: int) -> np.ndarray:
    """Slow, loop-based transcription of the documented forward model."""
    h, w = x.shape
    c = h // 2
    y = np.zeros((len(angles_deg), detectors))
    for a, theta in enumerate(np.deg2rad(angles_deg)):
        cos_a, sin_a = math.cos(theta), math.sin(theta)
        for d in range(detectors):
            s = d - detectors // 2
            for t in range(h):
                u = t - c
                r = c - sin_a * s + cos_a * u
                col = c + cos_a * s + sin_a * u
                r0, c0 = math.floor(r), math.floor(col)
                dr, dc = r - r0, col - c0
                for rr, cc, wt in (
                    (r0, c0, (1 - dr) * (1 - dc)),
                    (r0, c0 + 1, (1 - dr) * dc),
                    (r0 + 1, c0, dr * (1 - dc)),
                    (r0 + 1, c0 + 1, dr * dc),
                ):
                    if 0 <= rr < h and 0 <= cc < w:
                        y[a, d] += wt * x[rr, cc]
    return y


def as_float64(g: CTGeometry) -> CTGeometry:
    return dataclasses.replace(
        g,
        fwd_weight=g.fwd_weight.astype(np.float64),
        adj_weight=g.adj_weight.astype(np.float64),
    )


@pytest.fixture(scope="module")
def phantom128() -> np.ndarray:
    return phantom(128)


# --------------------------------------------------------------------------
# construction, shapes, validation
# --------------------------------------------------------------------------


def test_module_is_numpy_only() -> None:
    tree = ast.parse(Path(ctg.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "functools", "dataclasses", "numpy"}


def test_uniform_angles() -> None:
    a = uniform_angles(4)
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, [0.0, 45.0, 90.0, 135.0])
    with pytest.raises(ValueError):
        uniform_angles(0)


def test_shapes_dtypes_and_padding() -> None:
    g = ct_geometry(uniform_angles(10), 32, 32)
    n_a, n_d, k1 = g.fwd_index.shape
    h, w, k2 = g.adj_index.shape
    assert (n_a, n_d, h, w) == (10, 32, 32, 32)
    assert (g.n_angles, g.n_detectors, g.height, g.width) == (10, 32, 32, 32)
    assert g.fwd_weight.shape == (n_a, n_d, k1) and g.adj_weight.shape == (h, w, k2)
    assert g.fwd_index.dtype == np.int64 and g.adj_index.dtype == np.int64
    assert g.fwd_weight.dtype == np.float32 and g.adj_weight.dtype == np.float32
    assert g.ramp.shape == (32, 32) and g.ramp.dtype == np.float32
    assert g.fbp_scale == pytest.approx(np.pi / 10)

    assert g.fwd_index.min() >= 0 and g.fwd_index.max() < h * w
    assert g.adj_index.min() >= 0 and g.adj_index.max() < n_a * n_d
    # Bilinear weights are in (0, 1] per sample; merged ones stay positive.
    assert g.fwd_weight.min() >= 0 and g.adj_weight.min() >= 0
    # Padding convention: zero weight <=> index 0 (a real entry may also use 0).
    assert np.all(g.fwd_index[g.fwd_weight == 0] == 0)
    assert np.all(g.adj_index[g.adj_weight == 0] == 0)
    # Rows are left-packed and K is tight.
    for weight in (g.fwd_weight, g.adj_weight):
        filled = weight > 0
        assert np.all(filled[..., :-1] >= filled[..., 1:])
        assert filled[..., -1].any()


def test_rows_have_no_duplicate_indices() -> None:
    g = ct_geometry(uniform_angles(7), 16, 16)
    for index, weight in ((g.fwd_index, g.fwd_weight), (g.adj_index, g.adj_weight)):
        idx = index.reshape(-1, index.shape[-1])
        filled = weight.reshape(idx.shape) > 0
        for row, mask in zip(idx, filled, strict=True):
            assert len(np.unique(row[mask])) == mask.sum()


def test_arrays_are_read_only_and_cached() -> None:
    angles = uniform_angles(6)
    g = ct_geometry(angles, 16, 16)
    # Rounding to 1e-9 degrees makes near-identical angle lists share a build.
    assert ct_geometry(list(angles + 1e-12), 16, 16) is g
    assert ct_geometry(angles, 16, 16, detectors=16) is g
    assert ct_geometry(angles, 16, 16, detectors=18) is not g
    for arr in (g.fwd_index, g.fwd_weight, g.adj_index, g.adj_weight, g.ramp):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr.flat[0] = 1


def test_non_square_raises() -> None:
    with pytest.raises(ValueError, match="square"):
        ct_geometry(uniform_angles(4), 16, 20)


@pytest.mark.parametrize(
    ("angles", "height", "detectors"),
    [([], 16, None), ([0.0, np.nan], 16, None), ([0.0], 0, None), ([0.0], 16, 0)],
)
def test_invalid_arguments_raise(angles: list[float], height: int, detectors: int | None) -> None:
    with pytest.raises(ValueError):
        ct_geometry(np.asarray(angles), height, height, detectors)


def test_wrong_input_shapes_raise() -> None:
    g = ct_geometry(uniform_angles(4), 16, 16)
    with pytest.raises(ValueError, match="trailing shape"):
        ct_forward(g, np.zeros((16, 15)))
    with pytest.raises(ValueError, match="trailing shape"):
        ct_adjoint(g, np.zeros((5, 16)))


def test_ramp_is_kak_slaney_ramlak() -> None:
    n = 9
    g = ct_geometry(uniform_angles(3), n, n)
    h = g.ramp[:, 0]  # h[i - 0]
    assert h[0] == pytest.approx(0.25)
    assert h[1] == pytest.approx(-1 / np.pi**2)
    assert h[2] == 0.0
    assert h[3] == pytest.approx(-1 / (9 * np.pi**2))
    np.testing.assert_array_equal(g.ramp, g.ramp.T)  # h is even
    # y @ ramp.T is the linear ("same"-cropped) convolution with h.
    rng = np.random.default_rng(3)
    y = rng.standard_normal((3, n))
    taps = np.concatenate([h[::-1], h[1:]]).astype(np.float64)  # h[-(n-1)..n-1]
    expected = np.stack([np.convolve(row, taps)[n - 1 : 2 * n - 1] for row in y])
    np.testing.assert_allclose(y @ g.ramp.T, expected, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# forward model vs skimage and vs the documented formula
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "angles",
    [uniform_angles(50), uniform_angles(180), IRREGULAR_ANGLES],
    ids=["uniform50", "uniform180", "irregular"],
)
def test_forward_matches_skimage_radon(phantom128: np.ndarray, angles: np.ndarray) -> None:
    g = ct_geometry(angles, 128, 128)
    y = ct_forward(g, phantom128)
    assert y.shape == (len(angles), 128)
    # Same bilinear sampling as skimage's warp, so only float32 weight
    # round-off remains (measured ~3e-9).
    assert rel_err(y, skimage_sinogram(phantom128, angles)) < 1e-6


@pytest.mark.parametrize("n", [31, 32])
def test_forward_matches_skimage_including_corners(n: int) -> None:
    """Non-zero pixels up to the image border exercise the edge handling."""
    rng = np.random.default_rng(n)
    x = rng.random((n, n))
    angles = np.concatenate([uniform_angles(12), IRREGULAR_ANGLES, [-30.0, 250.0]])
    g = ct_geometry(angles, n, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "zero outside the circle"
        expected = skimage_sinogram(x, angles)
    assert rel_err(ct_forward(g, x), expected) < 1e-6


@pytest.mark.parametrize("detectors", [12, 15, 16, 23])
def test_forward_matches_formula_for_any_detector_count(detectors: int) -> None:
    rng = np.random.default_rng(detectors)
    x = rng.random((15, 15))
    angles = np.array([0.0, 30.0, 61.7, 90.0, 145.0])
    g = ct_geometry(angles, 15, 15, detectors=detectors)
    assert g.fwd_index.shape[:2] == (5, detectors)
    assert g.ramp.shape == (detectors, detectors)
    y = ct_forward(g, x)
    assert y.shape == (5, detectors)
    assert rel_err(y, reference_forward(x, angles, detectors)) < 1e-6


def test_forward_and_adjoint_broadcast_over_batch() -> None:
    g = ct_geometry(uniform_angles(8), 16, 16)
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 16, 16))
    y = ct_forward(g, x)
    assert y.shape == (2, 3, 8, 16)
    np.testing.assert_allclose(y[1, 2], ct_forward(g, x[1, 2]), rtol=1e-12)
    back = ct_adjoint(g, y)
    assert back.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(back[0, 1], ct_adjoint(g, y[0, 1]), rtol=1e-12)
    assert ct_fbp(g, y).shape == (2, 3, 16, 16)


# --------------------------------------------------------------------------
# adjoint
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "detectors"), [(32, None), (17, 21)])
def test_adjointness_float64(n: int, detectors: int | None) -> None:
    g = as_float64(ct_geometry(uniform_angles(13), n, n, detectors))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, n))
    y = rng.standard_normal((13, g.n_detectors))
    lhs = np.vdot(ct_forward(g, x), y)
    rhs = np.vdot(x, ct_adjoint(g, y))
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


def test_adjoint_layout_is_exact_transpose() -> None:
    g = ct_geometry(uniform_angles(7), 16, 16)
    fwd = dense_from_fwd(g)
    np.testing.assert_array_equal(fwd, dense_from_adj(g).T)
    assert np.count_nonzero(fwd) == np.count_nonzero(g.fwd_weight)


def test_ct_norm_matches_largest_singular_value() -> None:
    g = ct_geometry(uniform_angles(7), 16, 16)
    sigma = np.linalg.svd(dense_from_fwd(g), compute_uv=False)[0]
    est = ct_norm(g)
    assert abs(est / sigma - 1) < 0.03
    assert ct_norm(g) == est  # deterministic (and cached)


# --------------------------------------------------------------------------
# filtered back-projection
# --------------------------------------------------------------------------

# Errors are measured inside skimage's reconstruction circle: outside it the
# detector does not cover every angle, so FBP is undefined there.
# Measured (128x128): Shepp-Logan 0.137 (180 angles) / 0.163 (50 angles);
# smooth bump 0.018 / 0.021.


@pytest.mark.parametrize(("n_angles", "bound"), [(180, 0.15), (50, 0.2)])
def test_fbp_reconstructs_shepp_logan(phantom128: np.ndarray, n_angles: int, bound: float) -> None:
    g = ct_geometry(uniform_angles(n_angles), 128, 128)
    recon = ct_fbp(g, ct_forward(g, phantom128))
    mask = circle_mask(128)
    assert rel_err(recon * mask, phantom128) < bound


@pytest.mark.parametrize(("n_angles", "bound"), [(180, 0.03), (50, 0.035)])
def test_fbp_reconstructs_smooth_bump(n_angles: int, bound: float) -> None:
    x = smooth_bump(128, radius=40.0)
    g = ct_geometry(uniform_angles(n_angles), 128, 128)
    recon = ct_fbp(g, ct_forward(g, x))
    assert rel_err(recon * circle_mask(128), x) < bound
