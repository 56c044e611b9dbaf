"""POST/GET/DELETE /v1/reconstructions and the image download (real zoo and Engine)."""

from __future__ import annotations

import io
import math
import threading
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.config import Settings
from service.main import create_app
from service.wire import decode_array, encode_array
from tests.service.fakes import FakeEngine, FakeZoo
from tests.service.live import LiveServer

DENOISE = {"type": "denoising", "shape": [32, 32]}
SR = {"type": "superresolution", "shape": [32, 32], "factor": 2}


def measure(http: httpx.Client, operator: dict[str, Any], image: np.ndarray,
            sigma: float = 0.0) -> dict[str, Any]:
    body = {"operator": operator, "image": encode_array(image), "noise": {"sigma": sigma}}
    measurements: dict[str, Any] = http.post("/v1/simulate", json=body).json()["measurements"]
    return measurements


def reconstruct(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/reconstructions", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def poll(http: httpx.Client, location: str) -> dict[str, Any]:
    job: dict[str, Any] = http.get(location).json()
    while job["status"] in ("queued", "running"):
        job = http.get(location).json()
    return job


def test_tv_denoising_returns_the_full_result(http: httpx.Client, image: np.ndarray) -> None:
    y = measure(http, DENOISE, image, sigma=0.05)
    result = reconstruct(http, model="tv", operator=DENOISE, measurements=y,
                         noise={"sigma": 0.05}, options={"tv": {"max_iter": 200}})
    assert result["status"] == "succeeded" and result["model"] == "tv"
    assert result["family"] == "denoising" and result["error"] is None
    x = decode_array(**result["image"])
    assert x.shape == (32, 32) and x.dtype == np.float32 and x.min() >= 0.0  # nonneg
    noisy = decode_array(**y)
    assert np.linalg.norm(x - image) < np.linalg.norm(noisy - image)  # it denoised
    assert 1 <= result["iterations"] <= 200
    score = result["equivariance"]
    assert (score["group"], score["transforms"], score["map"]) == ("D4", 7, None)
    assert score["score_db"] == pytest.approx(-10 * math.log10(score["score"]))
    assert 0.0 < result["data_consistency"] < 1.0
    assert result["timings"]["queue_ms"] >= 0.0 and result["timings"]["compute_ms"] > 0.0


def test_pinv_of_denoising_is_exactly_equivariant(http: httpx.Client, image: np.ndarray) -> None:
    y = measure(http, DENOISE, image)
    result = reconstruct(http, model="pinv", operator=DENOISE, measurements=y,
                         options={"equivariance": {"map": True}})
    assert result["equivariance"]["score"] == pytest.approx(0.0, abs=1e-12)
    assert result["data_consistency"] == pytest.approx(0.0, abs=1e-6)
    assert not decode_array(**result["equivariance"]["map"]).any()


def test_adjoint_of_superresolution_is_not_shift_equivariant(
    http: httpx.Client, image: np.ndarray
) -> None:
    y = measure(http, SR, image)
    result = reconstruct(http, model="adjoint", operator=SR, measurements=y,
                         options={"equivariance": {"transforms": 8, "map": True}})
    score = result["equivariance"]
    assert (score["group"], score["transforms"]) == ("shifts", 8)  # the family default
    assert score["score"] > 0.01
    assert decode_array(**score["map"]).shape == (32, 32)


def test_the_score_can_be_switched_off(http: httpx.Client, image: np.ndarray) -> None:
    y = measure(http, DENOISE, image)
    result = reconstruct(http, model="adjoint", operator=DENOISE, measurements=y,
                         options={"equivariance": {"enabled": False}})
    assert result["equivariance"] is None and result["image"] is not None


def test_mri_complex_measurements(http: httpx.Client, image: np.ndarray) -> None:
    full = {"type": "mri", "shape": [32, 32],
            "mask": {"cartesian": {"acceleration": 1, "center_fraction": 0.0}}}
    y = measure(http, full, image)
    assert y["dtype"] == "complex64"
    result = reconstruct(http, model="pinv", operator=full, measurements=y)
    np.testing.assert_allclose(decode_array(**result["image"]), image, atol=1e-4)


def test_async_poll_download_and_cancel_after_finish(
    http: httpx.Client, image: np.ndarray
) -> None:
    y = measure(http, DENOISE, image)
    response = http.post(
        "/v1/reconstructions", json={"model": "adjoint", "operator": DENOISE, "measurements": y},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "respond-async"
    location = response.headers["location"]
    assert location == f"/v1/reconstructions/{response.json()['id']}"
    assert response.json()["status"] in ("queued", "running", "succeeded")
    job = poll(http, location)
    assert job["status"] == "succeeded"
    x = decode_array(**job["image"])

    npy = http.get(location + "/image")
    assert npy.headers["content-type"] == "application/octet-stream"
    assert np.array_equal(np.load(io.BytesIO(npy.content), allow_pickle=False), x)
    png = Image.open(io.BytesIO(http.get(location + "/image", params={"format": "png"}).content))
    assert (png.mode, png.size) == ("L", (32, 32))
    clipped = np.round(255 * np.clip(x, 0, 1)).astype(np.uint8)
    assert np.array_equal(np.asarray(png), clipped)
    stretched = Image.open(io.BytesIO(
        http.get(location + "/image", params={"format": "png", "scale": "minmax"}).content))
    assert np.asarray(stretched).min() == 0 and np.asarray(stretched).max() == 255

    assert http.delete(location).status_code == 409  # finished: nothing to cancel


def test_a_slow_sync_request_turns_into_202() -> None:
    engine = FakeEngine()
    with LiveServer(create_app(Settings(request_timeout_s=0.0), zoo=FakeZoo(),
                               engine=engine)) as server, server.client() as http:
        y = encode_array(np.ones((16, 16), np.float32))
        body = {"model": "adjoint", "operator": {"type": "denoising", "shape": [16, 16]},
                "measurements": y}
        engine.gate = threading.Event()
        try:
            response = http.post("/v1/reconstructions", json=body)
        finally:
            engine.gate.set()
        assert response.status_code == 202 and "preference-applied" not in response.headers
        assert poll(http, response.headers["location"])["status"] == "succeeded"


def test_metrics_count_requests_and_reconstructions(http: httpx.Client, image: np.ndarray) -> None:
    y = measure(http, DENOISE, image)
    reconstruct(http, model="adjoint", operator=DENOISE, measurements=y)
    text = http.get("/metrics").text
    assert ('equirecon_reconstructions_total{family="denoising",model="adjoint",'
            'status="succeeded"}') in text
    assert ('equirecon_http_requests_total{method="POST",route="/v1/reconstructions",'
            'status="200"}') in text
    assert "equirecon_batch_size_count" in text and "equirecon_queue_depth 0.0" in text
    assert 'equirecon_jobs{state="succeeded"}' in text
