"""POST /v1/simulate against numpy references of the operators (real engine)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from service.operators import generators as gen
from service.wire import decode_array, encode_array


def simulate(http: httpx.Client, operator: dict[str, Any], image: np.ndarray,
             noise: dict[str, Any] | None = None) -> np.ndarray:
    body: dict[str, Any] = {"operator": operator, "image": encode_array(image)}
    if noise is not None:
        body["noise"] = noise
    response = http.post("/v1/simulate", json=body)
    assert response.status_code == 200, response.text
    return decode_array(**response.json()["measurements"])


def centred_fft(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                           axes=(-2, -1))


def blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    padded = np.zeros_like(x, dtype=np.float64)
    k = kernel.shape[0]
    padded[:k, :k] = kernel
    padded = np.roll(padded, (-(k // 2), -(k // 2)), axis=(0, 1))
    return np.real(np.fft.ifft2(np.fft.fft2(x) * np.fft.fft2(padded)))


MASK = {"random": {"keep": 0.5, "seed": 3}}
CARTESIAN = {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 1}}
REFERENCES = {
    "denoising": ({}, lambda x: x),
    "inpainting": ({"mask": MASK}, lambda x: gen.random_mask(x.shape, 0.5, 3) * x),
    "blur": ({"kernel": {"gaussian": {"sigma": 1.5, "size": 7}}},
             lambda x: blur(x, gen.gaussian_kernel(1.5, 7))),
    "superresolution": ({"factor": 2}, lambda x: x.reshape(16, 2, 16, 2).mean(axis=(1, 3))),
    "compressed_sensing": ({"m": 300, "seed": 2},
                           lambda x: gen.gaussian_matrix(300, 1024, 2) @ x.ravel()),
    "mri": ({"mask": CARTESIAN},
            lambda x: gen.cartesian_mask(x.shape, 4, 0.08, 1) * centred_fft(x)),
    "mri_multicoil": ({"mask": CARTESIAN, "coils": {"birdcage": {"count": 4}}},
                      lambda x: gen.cartesian_mask(x.shape, 4, 0.08, 1)
                      * centred_fft(gen.birdcage_coils(4, x.shape) * x)),
}


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_measurements_match_the_numpy_reference(
    http: httpx.Client, image: np.ndarray, family: str
) -> None:
    params, reference = REFERENCES[family]
    y = simulate(http, {"type": family, "shape": [32, 32], **params}, image)
    want = reference(image.astype(np.float64))
    assert y.shape == want.shape
    assert y.dtype == (np.complex64 if np.iscomplexobj(want) else np.float32)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_ct_sinogram_shape(http: httpx.Client, image: np.ndarray) -> None:
    y = simulate(http, {"type": "ct", "shape": [32, 32], "angles": {"uniform": {"count": 12}}},
                 image)
    assert y.shape == (12, 32) and y.dtype == np.float32
    # Line integrals in pixel units: every view sums the same total mass.
    np.testing.assert_allclose(y.sum(axis=1), image.sum(), rtol=0.02)


def test_noise_is_seeded_gaussian(http: httpx.Client, image: np.ndarray) -> None:
    op = {"type": "denoising", "shape": [32, 32]}
    a = simulate(http, op, image, {"sigma": 0.1, "seed": 7})
    assert np.array_equal(a, simulate(http, op, image, {"sigma": 0.1, "seed": 7}))
    assert not np.array_equal(a, simulate(http, op, image, {"sigma": 0.1, "seed": 8}))
    expected = image + 0.1 * np.random.default_rng(7).standard_normal(image.shape)
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_complex_noise_on_both_parts_and_only_where_observed(
    http: httpx.Client, image: np.ndarray
) -> None:
    op = {"type": "mri", "shape": [32, 32], "mask": CARTESIAN}
    clean = simulate(http, op, image)
    noisy = simulate(http, op, image, {"sigma": 0.5, "seed": 0})
    mask = gen.cartesian_mask((32, 32), 4, 0.08, 1).astype(bool)
    n = noisy - clean
    assert np.all(n[~mask] == 0)  # zeros off the mask stay zeros
    re, im = np.random.default_rng(0).standard_normal((2, 32, 32))
    np.testing.assert_allclose(n[mask], 0.5 * (re + 1j * im)[mask], atol=1e-4)


def test_inpainting_noise_keeps_unobserved_pixels_zero(
    http: httpx.Client, image: np.ndarray
) -> None:
    y = simulate(http, {"type": "inpainting", "shape": [32, 32], "mask": MASK}, image,
                 {"sigma": 0.2, "seed": 1})
    assert np.all(y[gen.random_mask((32, 32), 0.5, 3) == 0] == 0)
