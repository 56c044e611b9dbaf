"""Losses: SURE is unbiased, MC vanishes on consistent images, EI sees non-invariant groups."""

from __future__ import annotations

import math

import pytest
import torch

from models.losses import (
    R2R_ALPHA,
    ei_loss,
    mc_loss,
    moi_loss,
    r2r_loss,
    random_transform,
    recorrupt,
    sure_loss,
)
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


def test_r2r_estimates_the_error_of_a_known_denoiser_from_one_pass() -> None:
    """R2R's target carries noise independent of its input's, so ``‖A f(y₁) - y₂‖²``
    less the known noise energy is the error of ``f(y₁)``; MC against ``y`` is not."""
    physics = Physics.from_json({"type": "denoising", "shape": [64, 64]}, torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 64, 64, generator=gen, dtype=torch.float64)
    sigma = 0.1
    y = physics(x, sigma, gen)
    y_in, y_target = recorrupt(y, sigma, generator=gen)
    assert float((y_in - y).std()) == pytest.approx(R2R_ALPHA * sigma, rel=0.02)

    def shrink(v: torch.Tensor) -> torch.Tensor:
        return 0.7 * v + 0.3 * v.mean()

    for f in (shrink, lambda v: v):  # a denoiser, and a copy of its (noisier) input
        true_error = float(((f(y_in) - x) ** 2).mean())
        estimate = float(r2r_loss(f(y_in), y_target, physics, sigma))
        assert abs(estimate - true_error) < 0.08 * true_error  # the noisy target's spread
        assert abs(float(mc_loss(f(y_in), y, physics)) - true_error) > 0.2 * true_error


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


def test_noisy_re_measurement_charges_a_network_that_copies_the_noise() -> None:
    """With ``σ`` the EI term measures ``T x̂`` with noise: a reconstructor that returns its
    measurement (the identity on denoising) pays ``σ²``, noiselessly nothing; a smoother
    pays less than the copy."""
    physics = Physics.from_json({"type": "denoising", "shape": [64, 64]}, torch.float64)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.full((4, 64, 64), 0.5, dtype=torch.float64)
    sigma = 0.1

    def copy(v: torch.Tensor) -> torch.Tensor:
        return v

    def smooth(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(v[:, None], 5, 1, 2, count_include_pad=False)[:, 0]

    def turn(v: torch.Tensor) -> torch.Tensor:
        return torch.rot90(v, 1, (-2, -1))

    assert float(ei_loss(x1, physics, copy, turn)) == 0.0
    noisy = float(ei_loss(x1, physics, copy, turn, sigma, gen))
    assert abs(noisy - sigma**2) < 0.05 * sigma**2
    assert float(ei_loss(x1, physics, smooth, turn, sigma, gen)) < noisy / 5


def test_a_detached_target_teaches_the_reconstructor_and_leaves_its_input_alone() -> None:
    """With ``detach`` the EI term's value is the same, but no gradient reaches ``x̂``:
    only the reconstructor learns from it. Without, ``x̂`` is pulled too."""
    physics = Physics.from_json({"type": "inpainting", "shape": [16, 16],
                                 "mask": {"random": {"keep": 0.5, "seed": 0}}}, torch.float64)
    gen = torch.Generator().manual_seed(0)
    weight = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def recon(v: torch.Tensor) -> torch.Tensor:  # a one-weight "network"
        return weight * physics.A_adjoint(v)

    def turn(v: torch.Tensor) -> torch.Tensor:
        return torch.rot90(v, 1, (-2, -1))

    values = {}
    for detach in (False, True):
        x_net = torch.rand(2, 16, 16, generator=gen.manual_seed(1), dtype=torch.float64)
        x_net.requires_grad_(True)
        weight.grad = None
        loss = ei_loss(x_net, physics, recon, turn, detach=detach)
        loss.backward()
        values[detach] = float(loss.detach())
        assert weight.grad is not None and float(weight.grad) != 0.0
        if detach:
            assert x_net.grad is None
        else:
            assert x_net.grad is not None and float(x_net.grad.abs().max()) > 0.0
    assert values[True] == values[False]


def _elements(group: str, x: torch.Tensor, draws: int = 200) -> set[bytes]:
    gen = torch.Generator().manual_seed(0)
    return {random_transform(group, gen, tuple(x.shape[-2:]))(x).numpy().tobytes()
            for _ in range(draws)}


def test_each_group_draws_exactly_its_non_identity_elements() -> None:
    """The training groups are the service's score groups (service/equivariance.py)."""
    x = torch.arange(16.0).reshape(1, 4, 4)
    rotations = {torch.rot90(x, k, (-2, -1)).numpy().tobytes() for k in (1, 2, 3)}
    mirrors = {torch.flip(torch.rot90(x, k, (-2, -1)), (-1,)).numpy().tobytes()
               for k in range(4)}
    flips = {x.flip(-1).numpy().tobytes(), x.flip(-2).numpy().tobytes(),
             torch.rot90(x, 2, (-2, -1)).numpy().tobytes()}
    assert _elements("rot90", x) == rotations
    assert _elements("flips", x) == flips
    assert _elements("D4", x) == rotations | mirrors
    shifts = _elements("shifts", x, 400)
    assert shifts == {torch.roll(x, (dy, dx), (-2, -1)).numpy().tobytes()
                      for dy in (1, 2, 3) for dx in range(4)}
    assert _elements("shifts+D4", x, 800) == shifts | rotations | mirrors


def test_flips_teach_mri_with_column_masks_next_to_nothing_and_quarter_turns_do() -> None:
    """Why mri-ei uses D4: a real image's k-space is Hermitian, so a column mask already
    sees its mirror; a quarter turn makes the columns rows."""
    physics = Physics.from_json(
        {"type": "mri", "shape": [32, 32],
         "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}}},
        torch.float64,
    )
    x = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = physics.A_dagger(physics.A(x))

    def ei(k: int, flip: bool) -> float:
        def turn(v: torch.Tensor) -> torch.Tensor:
            out = torch.rot90(v, k, (-2, -1))
            return out.flip(-1) if flip else out

        return float(ei_loss(x1, physics, physics.A_dagger, turn))

    mirrors = max(ei(0, True), ei(2, True), ei(2, False))
    quarter_turns = min(ei(1, False), ei(3, False), ei(1, True), ei(3, True))
    assert quarter_turns > 20 * mirrors


def test_d4_never_brings_the_corners_of_k_space_into_a_column_mask_and_a_rotation_does() -> None:
    """Under one fixed column mask, a quarter turn makes the sampled columns rows, but a
    frequency whose row and column are both unsampled stays unsampled under every element
    of D4, so EI over D4 cannot teach it (about half of the non-constant k-space at 4x); a
    rotation by an angle off the grid moves it onto sampled columns. (mri-ei draws a fresh
    mask every step, which covers it: docs/training-log.md "MRI: a fresh schedule, a TV step".)"""
    from models.losses.equivariant import _dihedral, rotation

    physics = Physics.from_json(
        {"type": "mri", "shape": [32, 32],
         "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}}},
        torch.float64,
    )
    d4 = [(k, flip) for k in range(4) for flip in (False, True)]

    def turn_back(v: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
        return torch.rot90(v.flip(-1) if flip else v, -k, (-2, -1))

    # Project a random image onto the null space of every A T_g (T_g A^T A T_g^-1 are
    # commuting Fourier masks, so alternating the projections converges).
    corners = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    fluctuation = float((corners - corners.mean()).norm())
    for _ in range(60):
        for k, flip in d4:
            seen = physics.A_adjoint(physics.A(_dihedral(k, flip)(corners)))
            corners = corners - turn_back(seen, k, flip)
    size = float(corners.norm())
    assert size > 0.4 * fluctuation  # a large part of the image, not a rounding residue
    assert max(float(physics.A(_dihedral(k, flip)(corners)).norm()) for k, flip in d4) < 1e-6 * size
    for angle in (0.3, 0.8, 1.2):
        assert float(physics.A(rotation(angle)(corners)).norm()) > 0.3 * size


def _blob(size: int, cy: float, cx: float) -> torch.Tensor:
    """A smooth (band-limited to float precision) Gaussian bump centred at (cy, cx)."""
    r, c = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                          torch.arange(size, dtype=torch.float64), indexing="ij")
    return torch.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * 3.0**2))[None]


def test_rotate_turns_the_image_by_the_angle_about_the_ct_centre_without_blurring() -> None:
    """``rotate`` is exact for band-limited images: a bump 20 pixels from pixel (32, 32)
    lands where the rotation puts it, whatever the angle (quarter turns included), and
    keeps its energy (bilinear interpolation: off by 0.05-0.26 and 1.8% of the energy)."""
    from models.losses.equivariant import rotation

    size, radius = 64, 20.0
    x = _blob(size, size // 2, size // 2 + radius)
    for angle in (0.3, -0.7, math.pi / 2, 2.0, 4.0, 5.9):
        turned = rotation(angle)(x)
        # sense of rotation: +x (columns) towards +y (rows)
        expected = _blob(size, size // 2 + radius * math.sin(angle),
                         size // 2 + radius * math.cos(angle))
        assert float((turned - expected).abs().max()) < 1e-3, angle
        assert abs(float((turned**2).sum() / (x**2).sum()) - 1) < 1e-6


def test_moi_sees_through_another_mask_what_the_measuring_mask_cannot() -> None:
    """Zero-filling is consistent with its own mask, whatever the missing pixels; a fresh
    mask re-measures pixels that were never seen, so the multi-operator term is not."""

    def inpainting(seed: int) -> Physics:
        spec = {"type": "inpainting", "shape": [32, 32], "mask": {"random": {"keep": 0.5,
                                                                                "seed": seed}}}
        return Physics.from_json(spec, torch.float64)

    measuring, fresh = inpainting(0), inpainting(1)
    x = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zero_filled = measuring.A_dagger(measuring.A(x))
    assert float(moi_loss(zero_filled, measuring, measuring.A_dagger)) < 1e-20
    assert float(moi_loss(zero_filled, fresh, fresh.A_dagger)) > 0.05
