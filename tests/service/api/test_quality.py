"""Acceptance: TV beats the pseudo-inverse, and the score ranks good above poor.

End to end over HTTP on the shipped zoo: simulate noisy measurements of a
piecewise-constant phantom, reconstruct them with ``tv``, ``pinv`` and
``adjoint``, and compare with the ground truth the service never sees.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from service.wire import decode_array, encode_array

SIZE = 48


def _phantom() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1)
    x = np.zeros((SIZE, SIZE))
    x[(yy - 0.45) ** 2 + (xx - 0.5) ** 2 < 0.12] = 0.5
    x[(yy > 0.3) & (yy < 0.5) & (xx > 0.3) & (xx < 0.45)] = 1.0
    x[(yy - 0.65) ** 2 + (xx - 0.6) ** 2 < 0.01] = 0.8
    return x.astype(np.float32)


PROBLEMS: dict[str, tuple[dict[str, Any], float]] = {
    "inpainting": (
        {"type": "inpainting", "shape": [SIZE, SIZE], "mask": {"random": {"keep": 0.5, "seed": 0}}},
        0.02,
    ),
    "mri": (
        {
            "type": "mri",
            "shape": [SIZE, SIZE],
            "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.1, "seed": 0}},
        },
        0.02,
    ),
    "ct": ({"type": "ct", "shape": [SIZE, SIZE], "angles": {"uniform": {"count": 20}}}, 0.2),
    "compressed_sensing": (
        {"type": "compressed_sensing", "shape": [SIZE, SIZE], "m": 700, "matrix": "structured"},
        0.02,
    ),
}


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((x - ref) ** 2)))


def _reconstruct(
    http: httpx.Client, model: str, op: dict[str, Any], y: dict[str, Any], sigma: float
):
    body = {"model": model, "operator": op, "measurements": y, "noise": {"sigma": sigma}}
    response = http.post("/v1/reconstructions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    return decode_array(**result["image"]), result["equivariance"]["score"]


@pytest.mark.parametrize("family", list(PROBLEMS))
def test_tv_beats_pinv_and_scores_better_than_poor_reconstructions(
    http: httpx.Client, family: str
) -> None:
    op, sigma = PROBLEMS[family]
    truth = _phantom()
    simulated = http.post(
        "/v1/simulate",
        json={"operator": op, "image": encode_array(truth), "noise": {"sigma": sigma, "seed": 1}},
    )
    assert simulated.status_code == 200, simulated.text
    y = simulated.json()["measurements"]
    x_tv, score_tv = _reconstruct(http, "tv", op, y, sigma)
    x_pinv, score_pinv = _reconstruct(http, "pinv", op, y, sigma)
    _, score_adjoint = _reconstruct(http, "adjoint", op, y, sigma)
    assert _psnr(x_tv, truth) > _psnr(x_pinv, truth) + 1.0
    assert score_tv < score_pinv
    assert score_tv < score_adjoint
