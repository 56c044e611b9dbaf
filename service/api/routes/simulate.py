"""Simulate measurements ``y = A x + n`` of an image."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.deps import EngineDep, ZooDep
from service.api.validate import prepare_simulation
from service.engine import Engine
from service.errors import documented
from service.noise import add_noise
from service.schemas import SimulateRequest, SimulateResponse
from service.wire import ArrayModel
from service.zoo import Zoo

__all__ = ["router"]

router = APIRouter(tags=["reconstruction"])


def _simulate(engine: Engine, zoo: Zoo, body: SimulateRequest) -> np.ndarray:
    op, image = prepare_simulation(body, zoo)
    params = {k: v[None] for k, v in op.params.items()}
    y = op.from_graph(engine.forward(op.kernel, image[None], params)[0])
    return add_noise(y, body.noise, op)


@router.post(
    "/v1/simulate", response_model=SimulateResponse, responses=documented(400, 413, 422, 503)
)
async def simulate(body: SimulateRequest, engine: EngineDep, zoo: ZooDep) -> SimulateResponse:
    """Measurements of `image` under `operator`, with optional seeded Gaussian noise."""
    y = await run_in_threadpool(_simulate, engine, zoo, body)
    return SimulateResponse(measurements=ArrayModel.of(y))
