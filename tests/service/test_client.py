"""The Python client against the live server (real zoo and Engine)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from service.client import EquiReconClient, EquiReconError, Reconstruction
from tests.service.live import LiveServer

INPAINT = {"type": "inpainting", "shape": [32, 32], "mask": {"random": {"keep": 0.6, "seed": 1}}}


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[EquiReconClient]:
    with EquiReconClient(live.url, timeout=60) as client:
        yield client


def test_catalogue(client: EquiReconClient) -> None:
    assert {"adjoint", "pinv", "tv"} <= {m["id"] for m in client.models()}
    assert client.model("tv")["kind"] == "tv"
    assert len(client.operators()) == 8


def test_simulate_then_reconstruct(client: EquiReconClient, image: np.ndarray) -> None:
    y = client.simulate(INPAINT, image, noise={"sigma": 0.01, "seed": 0})
    assert y.shape == (32, 32) and y.dtype == np.float32
    result = client.reconstruct("tv", INPAINT, y, noise={"sigma": 0.01},
                                options={"equivariance": {"transforms": 2, "map": True}})
    assert isinstance(result, Reconstruction) and result.status == "succeeded"
    assert result.image is not None and result.image.shape == (32, 32)
    assert np.linalg.norm(result.image - image) < np.linalg.norm(y - image)  # filled the holes
    assert (result.group, result.transforms) == ("shifts", 2)
    assert result.score is not None and result.score_db is not None and result.map is not None
    assert result.data_consistency is not None and result.iterations is not None
    assert result.queue_ms is not None and result.compute_ms is not None


def test_submit_result_download(client: EquiReconClient, image: np.ndarray) -> None:
    y = client.simulate(INPAINT, image)
    job = client.submit("adjoint", INPAINT, y)
    assert job.status in ("queued", "running", "succeeded")
    done = client.result(job.id)
    assert done.status == "succeeded" and done.image is not None
    npy = np.load(io.BytesIO(client.download(job.id)), allow_pickle=False)
    assert np.array_equal(npy, done.image)
    assert client.download(job.id, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.status(job.id).status == "succeeded"


def test_errors_carry_the_problem(client: EquiReconClient, image: np.ndarray) -> None:
    with pytest.raises(EquiReconError) as info:
        client.reconstruct("nope", INPAINT, image)
    assert info.value.status == 422
    assert info.value.problem["errors"][0]["loc"] == ["body", "model"]
    with pytest.raises(EquiReconError) as missing:
        client.cancel("no-such-job")
    assert missing.value.status == 404


def test_cancel_and_timeout_with_a_mock_transport() -> None:
    queued = {"id": "j1", "status": "queued", "model": "tv", "family": "ct"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json=queued | {"status": "cancelled"})
        return httpx.Response(200, json=queued)

    with EquiReconClient("http://fake", transport=httpx.MockTransport(handler)) as fake:
        assert fake.cancel("j1").status == "cancelled"
        with pytest.raises(TimeoutError, match="still queued"):
            fake.result("j1", poll_s=0.001, timeout=0.01)
