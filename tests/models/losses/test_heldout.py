"""The held-out measurement error: what it holds out, and that it estimates the error
where the reduced operator is blind, without ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.losses import heldout_error, split
from models.physics.operators import Physics

MRI = {
    "type": "mri",
    "shape": [64, 64],
    "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 3}},
}
INPAINTING = {"type": "inpainting", "shape": [64, 64], "mask": {"random": {"keep": 0.5, "seed": 3}}}


def test_mri_holds_out_a_fifth_of_the_sampled_columns_outside_the_centre() -> None:
    physics = Physics.from_json(MRI)
    mask = physics.compiled.params["mask"]
    kept, held = split(physics, np.random.default_rng(0))
    kept_mask = kept.compiled.params["mask"]
    np.testing.assert_array_equal(kept_mask + held.numpy(), mask)
    sampled = np.flatnonzero(mask[0])
    held_columns = np.flatnonzero(held.numpy()[0])
    assert (held.numpy() == held.numpy()[:1]).all()  # whole columns
    assert set(held_columns) <= set(sampled)
    centre = {c for c in range(26, 39) if c in sampled}  # 0.08 x 64 around column 32
    assert centre and not centre & set(held_columns)
    outer = len(sampled) - len(centre)
    assert len(held_columns) == round(0.2 * outer)
    # The reduced operator measures nothing where the columns were held out.
    ax = kept.A(torch.rand(1, 64, 64))
    assert float((ax * held).abs().max()) == 0.0
    other = split(physics, np.random.default_rng(1))[1]
    assert not torch.equal(other, held)


def test_inpainting_holds_out_a_fifth_of_the_kept_pixels() -> None:
    physics = Physics.from_json(INPAINTING)
    mask = physics.compiled.params["mask"]
    kept, held = split(physics, np.random.default_rng(0))
    np.testing.assert_array_equal(kept.compiled.params["mask"] + held.numpy(), mask)
    assert held.sum() == round(0.2 * mask.sum())


def test_an_operator_without_a_mask_cannot_be_split() -> None:
    physics = Physics.from_json(
        {"type": "ct", "shape": [24, 24], "angles": {"uniform": {"count": 8}}}
    )
    with pytest.raises(ValueError, match="no held-out split for 'ct'"):
        split(physics, np.random.default_rng(0))


@pytest.mark.parametrize("spec", [MRI, INPAINTING], ids=["mri", "inpainting"])
def test_the_error_is_unbiased_for_the_error_on_what_was_held_out(spec: dict) -> None:
    """The truth scores ~0 (the noise's σ² taken off); a reconstruction from the kept part
    (the pseudo-inverse, blind on the held-out part) scores its true error there, which
    only the ground truth could otherwise tell; measured noise-free it is the same."""
    physics = Physics.from_json(spec, torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 64, 64, generator=gen, dtype=torch.float64)
    sigma = 0.05
    y = physics(x, sigma, gen)
    kept, held = split(physics, np.random.default_rng(0))
    estimate = float(heldout_error(kept.A_dagger(y), y, physics, held, sigma))
    truth = float(heldout_error(kept.A_dagger(y), physics.A(x), physics, held, 0.0))
    assert truth > 10 * sigma**2  # the held-out part is where the pseudo-inverse is blind
    assert estimate == pytest.approx(truth, rel=0.1)
    assert abs(float(heldout_error(x, y, physics, held, sigma))) < 0.1 * sigma**2
