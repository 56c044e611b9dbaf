"""The application factory. Nothing loads at import: the lifespan loads the zoo and workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Match, Route

from service.api.body_limit import BodyLimitMiddleware
from service.api.deps import Runtime
from service.api.routes import health, metrics, models, operators, reconstructions, simulate
from service.config import Settings
from service.dispatch.inprocess import InProcessDispatcher
from service.engine import Engine
from service.errors import LOWER_LAYER, ServiceError, problem_response
from service.jobs import JobStore
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import problem_openapi
from service.zoo import Zoo

__all__ = ["create_app"]

VERSION = "0.1.0"


def _load(settings: Settings, metrics: Metrics, zoo: Zoo | None, engine: Engine | None) -> Runtime:
    zoo = zoo or Zoo.load(settings.model_dir)  # verifies every sha256; ZooError refuses to start
    engine = engine or Engine(zoo, device=settings.device)
    jobs = JobStore(settings.result_ttl_s)
    dispatcher = InProcessDispatcher(
        engine, jobs, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1e3,
        max_queue=settings.max_queue, metrics=metrics,
    )
    return Runtime(zoo, engine, jobs, dispatcher)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    response = problem_response(exc)
    if response.status_code == 405:
        # Starlette lists only the first route matching the path; a path served by
        # several routes (GET and DELETE /v1/reconstructions/{id}) needs them all.
        methods = {
            method for route in request.app.router.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
        response.headers["Allow"] = ", ".join(sorted(methods))
    return response


def create_app(
    settings: Settings | None = None, *, zoo: Zoo | None = None, engine: Engine | None = None
) -> FastAPI:
    """Build the app; ``zoo``/``engine`` replace the loaded ones (tests with fakes)."""
    settings = settings or Settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await anyio.to_thread.run_sync(_load, settings, app_metrics, zoo, engine)
        runtime.dispatcher.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            app.state.runtime = None
            await anyio.to_thread.run_sync(runtime.dispatcher.stop)

    app = FastAPI(
        title="EquiRecon",
        version=VERSION,
        summary="Reconstruction service for computational imaging with a test-time "
        "equivariance score",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    app.state.runtime = None
    for router in (health, metrics, operators, models, simulate, reconstructions):
        app.include_router(router.router)
    # Each mapped type gets its own handler: Starlette sends a bare ``Exception``
    # handler through ServerErrorMiddleware, which answers 500 and re-raises.
    handled: list[type[Exception]] = [ServiceError, *LOWER_LAYER, Exception]
    for exc_type in handled:
        app.add_exception_handler(exc_type, _problem)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)  # outermost: sees every status
    problem_openapi(app)
    return app
