"""Losses: SURE is unbiased, MC vanishes on consistent images, EI sees non-invariant groups."""

from __future__ import annotations

import torch

from models.losses import ei_loss, mc_loss, sure_loss
from models.physics.operators import Physics


def test_sure_estimates_the_error_of_a_known_denoiser() -> None:
    physics = Physics.from_json({"type": "denoising", "shape": [64, 64]}, torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 64, 64, generator=gen, dtype=torch.float64)
    sigma = 0.1
    y = physics(x, sigma, gen)

    def shrink(v: torch.Tensor) -> torch.Tensor:
        return 0.7 * v + 0.3 * v.mean()

    true_error = float(((shrink(y) - x) ** 2).mean())
    estimate = float(sure_loss(shrink(y), y, physics, shrink, sigma, generator=gen))
    assert abs(estimate - true_error) < 0.1 * true_error
    naive = float(mc_loss(shrink(y), y, physics))
    assert abs(naive - true_error) > 3 * abs(estimate - true_error)


def test_mc_vanishes_on_the_pseudo_inverse() -> None:
    physics = Physics.from_json(
        {"type": "inpainting", "shape": [16, 16], "mask": {"random": {"keep": 0.5, "seed": 0}}},
        torch.float64,
    )
    y = physics.A(torch.rand(2, 16, 16, dtype=torch.float64))
    assert float(mc_loss(physics.A_dagger(y), y, physics)) < 1e-20


def test_ei_is_blind_to_an_invariant_group_and_sees_a_non_invariant_one() -> None:
    """Box downsampling commutes with shifts by multiples of the factor, not with others."""
    physics = Physics.from_json(
        {"type": "superresolution", "shape": [32, 32], "factor": 2}, torch.float64
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 32, 32, generator=gen, dtype=torch.float64)
    x1 = physics.A_dagger(physics.A(x))
    even = ei_loss(x1, physics, physics.A_dagger, lambda v: torch.roll(v, (2, 4), (-2, -1)))
    odd = ei_loss(x1, physics, physics.A_dagger, lambda v: torch.roll(v, (1, 0), (-2, -1)))
    assert float(even) < 1e-20
    assert float(odd) > 1e-4
