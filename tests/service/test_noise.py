"""Measurement noise (unit level; the API tests check it against the recipe)."""

from __future__ import annotations

import numpy as np

from service.noise import add_noise
from service.operators.compile import compile_operator
from service.operators.spec import Denoising, NoiseSpec

OP = compile_operator(Denoising(type="denoising", shape=(64, 64)))


def test_no_noise_returns_the_input() -> None:
    y = np.ones((64, 64), np.float32)
    assert add_noise(y, None, OP) is y
    assert add_noise(y, NoiseSpec(sigma=0.0, seed=3), OP) is y


def test_gaussian_level_and_dtype() -> None:
    y = np.zeros((64, 64), np.float32)
    n = add_noise(y, NoiseSpec(sigma=0.5, seed=0), OP)
    assert n.dtype == np.float32 and abs(float(n.std()) - 0.5) < 0.05
