"""Every error path answers application/problem+json naming the field (fake engine server)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from service.wire import encode_array
from tests.service.fakes import FakeEngine
from tests.service.live import LiveServer

Y16 = encode_array(np.full((16, 16), 0.5, np.float32))
DENOISE = {"type": "denoising", "shape": [16, 16]}


def recon(**changes: Any) -> dict[str, Any]:
    return {"model": "adjoint", "operator": DENOISE, "measurements": Y16} | changes


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].startswith("urn:equirecon:problem:")
    assert body["title"] and body["detail"] and "Traceback" not in response.text
    return body


def locs(body: dict[str, Any]) -> list[list[str | int]]:
    return [e["loc"] for e in body["errors"]]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (recon(operator={"type": "denoising", "shape": [4, 16]}),
         ["body", "operator", "denoising", "shape", 0]),
        (recon(operator={"type": "tomography", "shape": [16, 16]}), ["body", "operator"]),
        (recon(operator={"type": "blur", "shape": [16, 16],
                         "kernel": {"gaussian": {"sigma": 1.0, "size": 4}}}),
         ["body", "operator", "kernel", "gaussian", "size"]),  # OperatorError
        (recon(measurements=encode_array(np.zeros((8, 8), np.float32))),
         ["body", "measurements"]),
        (recon(measurements={"dtype": "float32", "shape": [16, 16], "data": "@@"}),
         ["body", "measurements"]),
        (recon(measurements={**Y16, "shape": [16, 15]}), ["body", "measurements"]),
        (recon(model="no-such-model"), ["body", "model"]),
        (recon(model="denoise-only", operator={"type": "inpainting", "shape": [16, 16],
                                               "mask": {"random": {"keep": 0.5}}}),
         ["body", "operator"]),
        (recon(operator={"type": "blur", "shape": [16, 16],
                         "kernel": {"gaussian": {"sigma": 1.0, "size": 3}}},
               measurements=Y16), ["body", "operator"]),  # no blur graphs in this zoo
        (recon(operator={"type": "denoising", "shape": [16, 32]},
               measurements=encode_array(np.zeros((16, 32), np.float32)),
               options={"equivariance": {"group": "D4"}}),
         ["body", "options", "equivariance", "group"]),
        (recon(options={"equivariance": {"group": "flips", "transforms": 4}}),
         ["body", "options", "equivariance", "transforms"]),
        (recon(options={"tv": {"max_iter": 5001}}), ["body", "options", "tv", "max_iter"]),
        (recon(options={"tv": {"tol": 0}}), ["body", "options", "tv", "tol"]),
        (recon(options={"tv": {"lambda": -1}}), ["body", "options", "tv", "lambda"]),
        (recon(noise={"sigma": -0.1}), ["body", "noise", "sigma"]),
        (recon(extra=1), ["body", "extra"]),
    ],
)
def test_invalid_reconstruction_requests_name_the_field(
    fake_http: httpx.Client, body: dict[str, Any], loc: list[str | int]
) -> None:
    assert loc in locs(problem(fake_http.post("/v1/reconstructions", json=body), 422))


def test_simulate_image_must_match_the_operator(fake_http: httpx.Client) -> None:
    body = {"operator": DENOISE, "image": encode_array(np.zeros((16, 8), np.float32))}
    assert locs(problem(fake_http.post("/v1/simulate", json=body), 422)) == [["body", "image"]]


def test_malformed_json_is_400(fake_http: httpx.Client) -> None:
    response = fake_http.post("/v1/reconstructions", content=b'{"model": ',
                              headers={"content-type": "application/json"})
    assert "not valid JSON" in problem(response, 400)["detail"]


def test_json_of_the_wrong_shape_is_422(fake_http: httpx.Client) -> None:
    problem(fake_http.post("/v1/reconstructions", json=[1, 2]), 422)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/reconstructions/nope"), ("DELETE", "/v1/reconstructions/nope"),
     ("GET", "/v1/reconstructions/nope/image"), ("GET", "/v1/models/nope"),
     ("GET", "/v1/nothing-here")],
)
def test_unknown_resources_are_404(fake_http: httpx.Client, method: str, path: str) -> None:
    problem(fake_http.request(method, path), 404)


def test_wrong_method_is_405(fake_http: httpx.Client) -> None:
    problem(fake_http.put("/v1/models"), 405)


def test_body_over_the_limit_by_content_length_is_413(fake_live: LiveServer) -> None:
    # The header alone decides: the server answers before any body byte is sent.
    url = urlsplit(fake_live.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    conn.putrequest("POST", "/v1/reconstructions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert response.getheader("content-type") == "application/problem+json"
    conn.close()


def test_body_over_the_limit_when_streamed_is_413(fake_http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to trust
        for _ in range(8):
            yield b" " * 8192

    response = fake_http.post("/v1/reconstructions", content=chunks(),
                              headers={"content-type": "application/json"})
    assert "MAX_BODY_MB" in problem(response, 413)["detail"]


def test_image_formats_and_job_states(fake_http: httpx.Client, fake_engine: FakeEngine) -> None:
    job = fake_http.post("/v1/reconstructions", json=recon()).json()
    assert job["status"] == "succeeded"
    url = f"/v1/reconstructions/{job['id']}"
    assert "not available yet" in problem(fake_http.get(url + "/image?format=dcm"), 406)["detail"]
    problem(fake_http.get(url + "/image?format=tiff"), 422)
    problem(fake_http.delete(url), 409)  # already finished


def test_unexpected_errors_are_opaque_500s(
    fake_http: httpx.Client, fake_engine: FakeEngine
) -> None:
    body = {"operator": DENOISE, "image": Y16}
    fake_engine.fail_forward = True
    try:
        response = fake_http.post("/v1/simulate", json=body)
    finally:
        fake_engine.fail_forward = False
    assert "secret" not in problem(response, 500)["detail"]


def test_a_failing_reconstruction_is_a_500_problem(fake_http: httpx.Client) -> None:
    zeros = encode_array(np.zeros((16, 16), np.float32))
    sync = fake_http.post("/v1/reconstructions", json=recon(model="poison", measurements=zeros))
    assert problem(sync, 500)["type"] == "urn:equirecon:problem:reconstruction-failed"
    queued = fake_http.post("/v1/reconstructions", json=recon(model="poison", measurements=zeros),
                            headers={"Prefer": "respond-async"}).json()
    job = fake_http.get(f"/v1/reconstructions/{queued['id']}").json()
    while job["status"] in ("queued", "running"):
        job = fake_http.get(f"/v1/reconstructions/{queued['id']}").json()
    assert job["status"] == "failed" and job["error"]["status"] == 500
    assert "poisoned" not in job["error"]["detail"]  # worker internals stay in the log
    problem(fake_http.get(f"/v1/reconstructions/{queued['id']}/image"), 409)


def test_queue_full_is_429_and_queued_jobs_can_be_cancelled(
    fake_http: httpx.Client, fake_engine: FakeEngine
) -> None:
    fake_engine.gate = threading.Event()  # the worker blocks inside its first batch
    try:
        asynchronous = {"Prefer": "respond-async"}
        running = fake_http.post("/v1/reconstructions", json=recon(), headers=asynchronous)
        assert running.status_code == 202
        assert running.headers["location"] == f"/v1/reconstructions/{running.json()['id']}"
        while fake_http.get(running.headers["location"]).json()["status"] == "queued":
            pass
        queued = [fake_http.post("/v1/reconstructions", json=recon(), headers=asynchronous)
                  for _ in range(2)]  # max_queue = 2
        assert [r.json()["status"] for r in queued] == ["queued", "queued"]
        full = fake_http.post("/v1/reconstructions", json=recon(), headers=asynchronous)
        assert problem(full, 429) and full.headers["retry-after"] == "1"
        cancelled = fake_http.delete(queued[1].headers["location"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert fake_http.delete(queued[1].headers["location"]).json()["status"] == "cancelled"
    finally:
        fake_engine.gate.set()
        fake_engine.gate = None
    for response, want in [(running, "succeeded"), (queued[0], "succeeded"),
                           (queued[1], "cancelled")]:
        job = fake_http.get(response.headers["location"]).json()
        while job["status"] in ("queued", "running"):
            job = fake_http.get(response.headers["location"]).json()
        assert job["status"] == want
