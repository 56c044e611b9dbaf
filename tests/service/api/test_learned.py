"""Learned models through the API: operator constraints, parameter changes inside the family."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from service.wire import encode_array

SIZE = 64


def _image() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1)
    return (0.5 + 0.4 * np.sin(5 * xx) * np.cos(3 * yy)).astype(np.float32)


def _inpainting(seed: int) -> dict[str, Any]:
    return {
        "type": "inpainting",
        "shape": [SIZE, SIZE],
        "mask": {"random": {"keep": 0.5, "seed": seed}},
    }


def _reconstruct(http: httpx.Client, model: str, op: dict[str, Any]) -> httpx.Response:
    y = http.post("/v1/simulate", json={"operator": op, "image": encode_array(_image())})
    assert y.status_code == 200, y.text
    body = {"model": model, "operator": op, "measurements": y.json()["measurements"]}
    return http.post("/v1/reconstructions", json=body)


def test_learned_models_are_listed_with_their_training(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["models"]}
    assert {"inpainting-ei", "inpainting-sup"} <= set(models)
    card = http.get("/v1/models/inpainting-ei").json()
    assert card["kind"] == "learned"
    assert card["families"] == ["inpainting"]
    assert card["training"]["ground_truth_used"] is False
    assert card["metrics"]["models"]["inpainting-ei"]["psnr_db"] > 20
    assert set(card["sha256"]) == {"graphs/learned/inpainting-ei.onnx"}


def test_another_family_is_refused_with_a_clear_422(http: httpx.Client) -> None:
    op = {
        "type": "mri",
        "shape": [SIZE, SIZE],
        "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.1, "seed": 0}},
    }
    response = _reconstruct(http, "inpainting-ei", op)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "inpainting" in problem["detail"]


def test_another_mask_of_the_family_is_served_and_scored(http: httpx.Client) -> None:
    first = _reconstruct(http, "inpainting-ei", _inpainting(0))
    second = _reconstruct(http, "inpainting-ei", _inpainting(5))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    a, b = first.json(), second.json()
    assert a["image"]["shape"] == b["image"]["shape"] == [SIZE, SIZE]
    assert a["equivariance"]["score"] != b["equivariance"]["score"]
    assert a["image"]["data"] != b["image"]["data"]
