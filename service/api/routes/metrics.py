"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.deps import MetricsDep
from service.errors import ServiceError
from service.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format"}},
)
def metrics(request: Request, metrics: MetricsDep) -> Response:
    """Prometheus metrics of this process."""
    runtime = getattr(request.app.state, "runtime", None)
    try:
        depth = runtime.dispatcher.queue_depth() if runtime else 0
        counts = runtime.jobs.counts() if runtime else {}
    except ServiceError:  # the job store (Redis) is down: still scrape this process
        depth, counts = 0, {}
    return Response(metrics.render(depth, counts), media_type=CONTENT_TYPE)
