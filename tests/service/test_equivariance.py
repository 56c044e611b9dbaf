"""Transforms and the equivariance score (DESIGN.md §8)."""

from __future__ import annotations

import numpy as np
import pytest

from service import equivariance as eq

SQUARE, WIDE = (16, 16), (16, 24)
CASES = [("rot90", SQUARE), ("flips", SQUARE), ("flips", WIDE), ("D4", SQUARE),
         ("shifts", SQUARE), ("shifts", WIDE)]


def _probe(shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(1).random((2, *shape))


@pytest.mark.parametrize(("group", "shape"), CASES)
def test_inverse_undoes_each_element(group: str, shape: tuple[int, int]) -> None:
    x = _probe(shape)
    for g in eq.elements(group, shape):
        assert np.array_equal(g.inverse().apply(g.apply(x)), x), g.name
        assert np.array_equal(g.apply(g.inverse().apply(x)), x), g.name


@pytest.mark.parametrize(("group", "shape"), CASES)
def test_elements_are_distinct_and_not_the_identity(group: str, shape: tuple[int, int]) -> None:
    x = _probe(shape)
    images = [g.apply(x).tobytes() for g in eq.elements(group, shape)]
    assert x.tobytes() not in images
    assert len(set(images)) == len(images)


@pytest.mark.parametrize("group", ["rot90", "flips", "D4"])
def test_finite_groups_are_closed_under_composition(group: str) -> None:
    x = _probe(SQUARE)
    members = {g.apply(x).tobytes() for g in eq.elements(group, SQUARE)} | {x.tobytes()}
    for a in eq.elements(group, SQUARE):
        for b in eq.elements(group, SQUARE):
            assert a.apply(b.apply(x)).tobytes() in members, (a.name, b.name)


def test_group_orders_and_documented_order() -> None:
    assert [g.name for g in eq.elements("D4", SQUARE)] == [
        "rot90", "rot180", "rot270", "flip_h", "flip_v", "transpose", "antitranspose"]
    assert [g.name for g in eq.elements("flips", WIDE)] == ["flip_h", "flip_v", "flip_hv"]
    x = np.arange(6.0).reshape(2, 3)
    flip_h, flip_v, flip_hv = eq.elements("flips", (2, 3))
    assert np.array_equal(flip_h.apply(x), x[:, ::-1])
    assert np.array_equal(flip_v.apply(x), x[::-1, :])
    assert np.array_equal(flip_hv.apply(x), x[::-1, ::-1])
    sq = np.arange(9.0).reshape(3, 3)
    rot90, *_, transpose, antitranspose = eq.elements("D4", (3, 3))
    assert np.array_equal(rot90.apply(sq), np.rot90(sq))
    assert np.array_equal(transpose.apply(sq), sq.T)
    assert np.array_equal(antitranspose.apply(sq), sq[::-1, ::-1].T)


@pytest.mark.parametrize("shape", [(8, 8), (16, 24), (64, 64), (256, 128)])
def test_shifts_follow_the_documented_recipe(shape: tuple[int, int]) -> None:
    h, w = shape
    rng, expected = np.random.default_rng(0), []
    pool = (2 * (h // 8) + 1) * (2 * (w // 8) + 1) - 1
    while len(expected) < min(eq.MAX_SHIFTS, pool):
        dy, dx = (int(v) for v in rng.integers([-(h // 8), -(w // 8)], [h // 8, w // 8],
                                               endpoint=True))
        if (dy, dx) != (0, 0) and (dy, dx) not in expected:
            expected.append((dy, dx))
    shifts = [g.shift for g in eq.elements("shifts", shape)]
    assert shifts == expected
    assert all(abs(dy) <= h // 8 and abs(dx) <= w // 8 for dy, dx in shifts)


def test_selection_is_deterministic_and_a_prefix() -> None:
    full = eq.select("shifts", (64, 64), 16)
    assert eq.select("shifts", (64, 64), 5) == full[:5]
    assert eq.select("shifts", (64, 64), None) == full[: eq.DEFAULT_SHIFTS]
    assert len(eq.select("D4", SQUARE, None)) == 7
    assert len(eq.select("rot90", SQUARE, None)) == 3


def test_square_only_groups_and_bounds() -> None:
    with pytest.raises(ValueError, match="square"):
        eq.elements("D4", WIDE)
    with pytest.raises(ValueError, match="square"):
        eq.select("rot90", WIDE, 1)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        eq.select("flips", WIDE, 4)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        eq.select("shifts", (8, 8), 9)  # only 8 shifts within ±1 pixel
    with pytest.raises(ValueError, match="group must be"):
        eq.elements("SE2", SQUARE)


def test_default_groups() -> None:
    assert eq.default_group("mri", SQUARE) == "D4"
    assert eq.default_group("mri", WIDE) == "flips"  # D4 needs a square
    assert eq.default_group("ct", SQUARE) == "D4"  # shifts leave CT's inscribed circle
    assert set(eq.DEFAULT_GROUP) == {"denoising", "inpainting", "blur", "superresolution",
                                     "compressed_sensing", "mri", "mri_multicoil", "ct"}


def _score(f, x: np.ndarray, s: list[eq.Transform]) -> tuple[float, np.ndarray]:
    """The score of reconstructor f for the identity operator, computed as the worker does."""
    x_hat = f(x)
    x_tilde = np.stack([f(g.apply(x_hat)) for g in s])
    return eq.score(x_hat, x_tilde, s), eq.error_map(x_hat, x_tilde, s)


@pytest.mark.parametrize(("group", "shape"), CASES)
def test_an_equivariant_reconstructor_scores_zero(group: str, shape: tuple[int, int]) -> None:
    x = _probe(shape)[0]
    s = eq.select(group, shape, None)
    # Pointwise (so equivariant) and idempotent (so f(A x̂) = x̂ for A = I): the score is 0.
    value, error_map = _score(lambda y: np.clip(y, 0.2, 0.8), x, s)
    assert value == 0.0 and not error_map.any()
    assert eq.score_db(value) == 120.0


@pytest.mark.parametrize(("group", "shape"), CASES)
def test_a_non_equivariant_reconstructor_scores_above_zero(
    group: str, shape: tuple[int, int]
) -> None:
    x = _probe(shape)[0]
    s = eq.select(group, shape, None)
    # Idempotent too, but the clip level depends on the column: not equivariant.
    ceiling = np.linspace(0.3, 1.0, shape[1])
    value, error_map = _score(lambda y: np.minimum(y, ceiling), x, s)
    assert value > 1e-3 and error_map.shape == shape and error_map.max() > 0


def test_score_values() -> None:
    x_hat = np.ones((4, 4))
    (g,) = eq.select("flips", (4, 4), 1)
    assert eq.score(x_hat, 1.1 * np.ones((1, 4, 4)), [g]) == pytest.approx(0.01)
    assert eq.score_db(0.01) == pytest.approx(20.0)
    # An all-zero x̂ gives a huge score, not a division error.
    assert eq.score(np.zeros((4, 4)), np.ones((1, 4, 4)), [g]) > 1e10
