"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import NotReady, documented
from service.schemas import Health

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=documented(503))
def readyz(request: Request) -> Health:
    """Readiness: models loaded and workers running (503 otherwise)."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("models are not loaded yet")
    if not runtime.dispatcher.alive():
        raise NotReady("the reconstruction workers are not running")
    return Health(status="ready")
