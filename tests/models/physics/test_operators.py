"""Every operator family, parametrised over one list: adjointness, pinv, norm, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.physics.operators import OPERATORS, Physics

KERNELS = list(OPERATORS)


def _physics(kernel: str) -> Physics:
    return Physics.from_json(OPERATORS[kernel], torch.float64)


def _image(physics: Physics, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *physics.compiled.image_shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_adjoint_matches_inner_products(kernel: str) -> None:
    physics = _physics(kernel)
    tolerance = 1e-4 if kernel == "ct" else 1e-5
    assert physics.adjointness_test(_image(physics)) < tolerance


@pytest.mark.parametrize("kernel", KERNELS)
def test_shapes_follow_the_compiled_operator(kernel: str) -> None:
    physics = _physics(kernel)
    x = _image(physics, batch=3)
    y = physics.A(x)
    assert tuple(y.shape) == (3, *physics.compiled.graph_measurement_shape)
    assert tuple(physics.A_adjoint(y).shape) == tuple(x.shape)
    assert tuple(physics.A_dagger(y).shape) == tuple(x.shape)


@pytest.mark.parametrize("kernel", KERNELS)
def test_batching_is_per_sample(kernel: str) -> None:
    physics = _physics(kernel)
    x = _image(physics, batch=3)
    together = physics.A_dagger(physics.A(x))
    alone = torch.cat([physics.A_dagger(physics.A(x[i : i + 1])) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kernel", KERNELS)
def test_compiled_norm_bounds_the_power_method(kernel: str) -> None:
    physics = _physics(kernel)
    measured = physics.compute_norm()
    # The compiled norm is an upper estimate (PDHG steps stay stable) and tight.
    assert measured <= physics.compiled.norm * (1 + 1e-6)
    assert physics.compiled.norm <= 1.05 * measured


# Kernels whose pseudo-inverse is exact on the range of A: A A† y = y.
EXACT_PINV = [
    "denoising",
    "inpainting",
    "superresolution",
    "cs_dense",
    "cs_structured",
    "mri_multicoil",
]


@pytest.mark.parametrize("kernel", EXACT_PINV)
def test_pinv_reproduces_measurements(kernel: str) -> None:
    physics = _physics(kernel)
    y = physics.A(_image(physics))
    residual = torch.linalg.vector_norm(
        physics.A(physics.A_dagger(y)) - y
    ) / torch.linalg.vector_norm(y)
    assert residual < 1e-5


@pytest.mark.parametrize("kernel", EXACT_PINV)
def test_pinv_is_minimum_norm(kernel: str) -> None:
    """A† A x is the projection of x on the row space: idempotent and norm-reducing."""
    physics = _physics(kernel)
    x = _image(physics)
    projected = physics.A_dagger(physics.A(x))
    again = physics.A_dagger(physics.A(projected))
    torch.testing.assert_close(again, projected, rtol=1e-4, atol=1e-5)
    assert torch.linalg.vector_norm(projected) <= torch.linalg.vector_norm(x) * (1 + 1e-9)


def test_blur_pinv_inverts_a_well_conditioned_kernel() -> None:
    physics = Physics.from_json(
        {"type": "blur", "shape": [16, 16], "kernel": {"gaussian": {"sigma": 0.5, "size": 3}}},
        torch.float64,
    )
    x = _image(physics)
    torch.testing.assert_close(physics.A_dagger(physics.A(x)), x, rtol=1e-5, atol=1e-6)


def test_mri_pinv_with_full_sampling_is_the_inverse_fft() -> None:
    full = np.ones((16, 12), dtype=np.float32)
    from service.wire import encode_array

    physics = Physics.from_json(
        {"type": "mri", "shape": [16, 12], "mask": encode_array(full)}, torch.float64
    )
    x = _image(physics)
    torch.testing.assert_close(physics.A_dagger(physics.A(x)), x, rtol=1e-5, atol=1e-6)


def test_mri_forward_is_the_centred_orthonormal_fft() -> None:
    physics = Physics.from_json(OPERATORS["mri"], torch.float64)
    x = _image(physics, batch=1)
    y = physics.A(x)[0].numpy()
    mask = physics.compiled.params["mask"]
    want = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x[0].numpy()), norm="ortho")) * mask
    np.testing.assert_allclose(y[0] + 1j * y[1], want, atol=1e-5)


def test_blur_forward_is_circular_convolution() -> None:
    physics = Physics.from_json(OPERATORS["blur"], torch.float64)
    x = _image(physics, batch=1)[0].numpy()
    from service.operators.generators import gaussian_kernel

    k = gaussian_kernel(1.5, 7).astype(np.float64)
    want = np.zeros_like(x)
    for i in range(7):
        for j in range(7):
            want += k[i, j] * np.roll(x, (i - 3, j - 3), axis=(0, 1))
    np.testing.assert_allclose(physics.A(torch.from_numpy(x)[None])[0].numpy(), want, atol=1e-5)


def test_noise_has_the_requested_level() -> None:
    physics = _physics("denoising")
    y = torch.zeros(4, 64, 64, dtype=torch.float64)
    noisy = physics.noise(y, 0.2, torch.Generator().manual_seed(0))
    assert abs(float(noisy.std()) - 0.2) < 0.01


@pytest.mark.parametrize("sparse", [False, True], ids=["ell", "csr"])
def test_ct_gradients_use_the_stored_adjoint_and_match_autograd(sparse: bool) -> None:
    from models.physics import functional

    physics = Physics.from_json(OPERATORS["ct"])
    params = physics.params(2, torch.float64, sparse=sparse)
    ell = physics.params(2, torch.float64)
    if sparse:  # 32-bit indices: the product reads less (python -m bench.training_step)
        for name in ("fwd_csr", "adj_csr"):
            assert params[name].crow_indices().dtype == torch.int32
            assert params[name].col_indices().dtype == torch.int32
    x = torch.rand(2, 24, 24, dtype=torch.float64, requires_grad=True)
    y = functional.forward("ct", x, params)
    w = torch.rand(y.shape, dtype=torch.float64)
    (grad_custom,) = torch.autograd.grad((y * w).sum(), x)
    # autograd's own gradient of the plain gather (scatter-add), the reference
    plain = functional._ell_apply(x, ell["fwd_index"], ell["fwd_weight"])
    torch.testing.assert_close(y, plain, rtol=1e-10, atol=1e-12)
    (grad_plain,) = torch.autograd.grad((plain * w).sum(), x)
    torch.testing.assert_close(grad_custom, grad_plain, rtol=1e-10, atol=1e-12)
    assert y.grad_fn is not None and "Transposed" in type(y.grad_fn).__name__
    # and through the adjoint, back to the measurements
    v = torch.rand(y.shape, dtype=torch.float64, requires_grad=True)
    z = functional.adjoint("ct", v, params)
    torch.testing.assert_close(z, functional.adjoint("ct", v.detach(), ell), rtol=1e-10, atol=1e-12)
    (grad_v,) = torch.autograd.grad((z * x.detach()).sum(), v)
    torch.testing.assert_close(grad_v, functional.forward("ct", x.detach(), params))
