"""The PDHG TV block: exact gradient adjoint, descent of the objective, noise removal; the
TV proximal step of the networks."""

from __future__ import annotations

import math

import pytest
import torch

from models.physics.operators import OPERATORS, Physics
from models.recon.tv import gradient, gradient_adjoint, tv_block, tv_init, tv_prox


def test_gradient_adjoint_is_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 7, generator=gen, dtype=torch.float64)
    p = torch.randn(2, 2, 9, 7, generator=gen, dtype=torch.float64)
    lhs = (gradient(x) * p).sum()
    rhs = (x * gradient_adjoint(p)).sum()
    assert abs(float(lhs - rhs)) < 1e-12 * abs(float(lhs))


def test_gradient_norm_is_at_most_sqrt8() -> None:
    v = torch.randn(1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(200):
        v = gradient_adjoint(gradient(v))
        v = v / torch.linalg.vector_norm(v)
    assert float(torch.linalg.vector_norm(gradient_adjoint(gradient(v)))) <= 8.0


def _objective(physics: Physics, x, y, lam: float) -> float:
    residual = physics.A(x) - y
    tv = torch.sqrt((gradient(x) ** 2).sum(1)).sum()
    return float(0.5 * (residual**2).sum() / physics.compiled.norm**2 + lam * tv)


@pytest.mark.parametrize("kernel", list(OPERATORS))
def test_tv_lowers_the_objective_below_the_start(kernel: str) -> None:
    physics = Physics.from_json(OPERATORS[kernel], torch.float64)
    h, w = physics.compiled.image_shape
    x_true = torch.zeros(1, h, w, dtype=torch.float64)
    x_true[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    y = physics(x_true, sigma=0.01, generator=torch.Generator().manual_seed(0))
    lam = 0.01
    params = physics.params(1, torch.float64)
    x0 = torch.clamp(physics.A_dagger(y), min=0.0)
    state = tv_init(x0, y)
    one = torch.ones(1, dtype=torch.float64)
    for _ in range(20):
        *state, delta = tv_block(
            kernel, *state, y, params, one / physics.compiled.norm, one * lam, 0 * one, one
        )
    assert _objective(physics, state[0], y, lam) < _objective(physics, x0, y, lam)
    assert float(state[0].min()) >= 0.0
    assert float(delta[0]) < 0.05


def test_tv_denoises_a_piecewise_constant_image() -> None:
    physics = Physics.from_json({"type": "denoising", "shape": [32, 32]}, torch.float64)
    x_true = torch.zeros(1, 32, 32, dtype=torch.float64)
    x_true[:, 8:24, 8:24] = 1.0
    y = physics(x_true, sigma=0.2, generator=torch.Generator().manual_seed(0))
    state = tv_init(y, y)
    one = torch.ones(1, dtype=torch.float64)
    for _ in range(30):
        *state, _ = tv_block("denoising", *state, y, {}, one, 0.15 * one, -1e30 * one, one)
    err_tv = float(((state[0] - x_true) ** 2).mean())
    err_noisy = float(((y - x_true) ** 2).mean())
    assert err_tv < err_noisy / 5


def test_a_larger_step_ratio_converges_faster_on_ct() -> None:
    """CT's normalised data term is small against the image: s = sqrt(τ/σ) = 16 gets
    much closer to the TV minimiser than s = 1 in the same number of iterations."""
    physics = Physics.from_json(
        {"type": "ct", "shape": [32, 32], "angles": {"uniform": {"count": 20}}}, torch.float64
    )
    x_true = torch.zeros(1, 32, 32, dtype=torch.float64)
    x_true[:, 10:22, 8:20] = 1.0
    y = physics(x_true, sigma=0.01, generator=torch.Generator().manual_seed(0))
    lam = 1e-3
    params = physics.params(1, torch.float64)
    x0 = torch.clamp(physics.A_dagger(y), min=0.0)
    one = torch.ones(1, dtype=torch.float64)

    def objective_after(iterations: int, ratio: float) -> float:
        state = tv_init(x0, y)
        for _ in range(iterations // 10):
            *state, _ = tv_block(kernel="ct", x=state[0], xbar=state[1], p=state[2], q=state[3],
                                 y=y, params=params, inv_norm=one / physics.compiled.norm,
                                 lam=one * lam, lower=0 * one, ratio=one * ratio)
        return _objective(physics, state[0], y, lam)

    optimum = objective_after(3000, 16.0)
    gap_fast = objective_after(100, 16.0) - optimum
    gap_slow = objective_after(100, 1.0) - optimum
    assert gap_fast < gap_slow / 5  # measured: 9x smaller


def test_the_tv_prox_denoises_and_trains_through_flat_regions() -> None:
    """The network's final TV step: it removes noise from a piecewise-constant image, a
    vanishing weight leaves the image alone, and the gradient is finite where the image is
    flat (the dual variable is 0 there and |p| has no derivative at 0 without ε)."""
    x_true = torch.zeros(2, 32, 32)
    x_true[:, 8:24, 8:24] = 1.0
    z = (x_true + 0.05 * torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(0)))
    z = z.clamp(min=0.0).requires_grad_()
    log_lam = torch.tensor(math.log(0.05), requires_grad=True)
    x = tv_prox(z, log_lam.exp())
    error = ((x - x_true) ** 2).mean()
    error.backward()
    # measured: 3x lower
    assert float(error.detach()) < float(((z.detach() - x_true) ** 2).mean()) / 2.5
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    assert log_lam.grad is not None and math.isfinite(float(log_lam.grad))
    assert float(log_lam.grad) != 0.0
    with torch.no_grad():
        assert torch.allclose(tv_prox(z, torch.tensor(1e-9)), z, atol=1e-6)
