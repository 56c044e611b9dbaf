"""A small synchronous Python client of the REST API (httpx + numpy only).

Example::

    with EquiReconClient("http://127.0.0.1:8000") as client:
        op = {"type": "inpainting", "shape": [64, 64], "mask": {"random": {"keep": 0.5}}}
        y = client.simulate(op, x, noise={"sigma": 0.01})
        result = client.reconstruct("tv", op, y, noise={"sigma": 0.01})
        print(result.score_db, result.image.shape)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np

from service.wire import decode_array, encode_array

__all__ = ["EquiReconClient", "EquiReconError", "Reconstruction"]

_TERMINAL = ("succeeded", "failed", "cancelled")


class EquiReconError(Exception):
    """An error answer of the service; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem


def _array(value: dict[str, Any] | None) -> np.ndarray | None:
    return None if value is None else decode_array(value["dtype"], value["shape"], value["data"])


@dataclass(frozen=True)
class Reconstruction:
    """A reconstruction job as the service reports it; ``image`` once it succeeded."""

    id: str
    status: str
    model: str
    image: np.ndarray | None = field(default=None, repr=False)
    score: float | None = None
    score_db: float | None = None
    group: str | None = None
    transforms: int | None = None
    map: np.ndarray | None = field(default=None, repr=False)
    data_consistency: float | None = None
    iterations: int | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    error: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in _TERMINAL

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Reconstruction:
        eq = body.get("equivariance") or {}
        timings = body.get("timings") or {}
        return cls(
            id=body["id"], status=body["status"], model=body["model"],
            image=_array(body.get("image")),
            score=eq.get("score"), score_db=eq.get("score_db"), group=eq.get("group"),
            transforms=eq.get("transforms"), map=_array(eq.get("map")),
            data_consistency=body.get("data_consistency"), iterations=body.get("iterations"),
            queue_ms=timings.get("queue_ms"), compute_ms=timings.get("compute_ms"),
            error=body.get("error"), raw=body,
        )


class EquiReconClient:
    """Blocking client; ``transport`` lets tests pass an ``httpx.MockTransport``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # The sync wait of the server may take its whole REQUEST_TIMEOUT_S: read a bit longer.
        self._http = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout, read=timeout + 5.0),
            transport=transport,
        )
        self.timeout = timeout

    def __enter__(self) -> EquiReconClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text}
            raise EquiReconError(response.status_code, problem)
        return response

    def models(self) -> list[dict[str, Any]]:
        """Summaries of the served models."""
        models: list[dict[str, Any]] = self._call("GET", "/v1/models").json()["models"]
        return models

    def model(self, model_id: str) -> dict[str, Any]:
        """One model card."""
        card: dict[str, Any] = self._call("GET", f"/v1/models/{model_id}").json()
        return card

    def operators(self) -> list[dict[str, Any]]:
        """Operator families with their JSON schemas."""
        families: list[dict[str, Any]] = self._call("GET", "/v1/operators").json()["families"]
        return families

    def simulate(
        self, operator: dict[str, Any], image: np.ndarray, noise: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Measurements ``A x (+ noise)`` of ``image`` (float32 [H, W])."""
        body = {"operator": operator, "image": encode_array(np.asarray(image, np.float32))}
        if noise is not None:
            body["noise"] = noise
        y = _array(self._call("POST", "/v1/simulate", json=body).json()["measurements"])
        assert y is not None
        return y

    def reconstruct(
        self,
        model: str,
        operator: dict[str, Any],
        measurements: np.ndarray,
        noise: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Reconstruction:
        """Reconstruct; ``wait=False`` returns the queued job at once (see :meth:`result`)."""
        body: dict[str, Any] = {
            "model": model, "operator": operator, "measurements": encode_array(measurements)
        }
        if noise is not None:
            body["noise"] = noise
        if options is not None:
            body["options"] = options
        headers = {} if wait else {"Prefer": "respond-async"}
        job = Reconstruction.from_json(
            self._call("POST", "/v1/reconstructions", json=body, headers=headers).json()
        )
        return self.result(job.id) if wait and not job.done else job

    def submit(self, model: str, operator: dict[str, Any], measurements: np.ndarray,
               **kwargs: Any) -> Reconstruction:
        """Queue a reconstruction and return at once (``Prefer: respond-async``)."""
        return self.reconstruct(model, operator, measurements, wait=False, **kwargs)

    def status(self, job_id: str) -> Reconstruction:
        """The job's current state (and result once done)."""
        return Reconstruction.from_json(self._call("GET", f"/v1/reconstructions/{job_id}").json())

    def result(
        self, job_id: str, poll_s: float = 0.05, timeout: float | None = None
    ) -> Reconstruction:
        """Poll until the job is done (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            job = self.status(job_id)
            if job.done:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"reconstruction {job_id} still {job.status}")
            time.sleep(poll_s)
            poll_s = min(2 * poll_s, 1.0)

    def cancel(self, job_id: str) -> Reconstruction:
        """Cancel a queued or running job."""
        return Reconstruction.from_json(
            self._call("DELETE", f"/v1/reconstructions/{job_id}").json()
        )

    def download(
        self, job_id: str, format: Literal["npy", "png", "dcm"] = "npy",
        scale: Literal["clip", "minmax"] = "clip",
    ) -> bytes:
        """The image file's bytes (``np.load(io.BytesIO(b), allow_pickle=False)`` for npy)."""
        params = {"format": format, "scale": scale}
        return self._call("GET", f"/v1/reconstructions/{job_id}/image", params=params).content
