"""The application factory. Nothing loads at import: the lifespan loads the zoo and workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Match, Route

from service.api.body_limit import BodyLimitMiddleware
from service.api.deps import Runtime, get_tenant
from service.api.routes import health, metrics, models, operators, reconstructions, simulate
from service.auth import KeyRing
from service.config import Settings
from service.dispatch.base import Dispatcher
from service.dispatch.inprocess import InProcessDispatcher
from service.engine import Engine
from service.errors import LOWER_LAYER, ServiceError, documented, problem_response
from service.jobs import JobStore
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import problem_openapi
from service.zoo import Zoo

__all__ = ["create_app"]

VERSION = "0.1.0"


def _load(settings: Settings, metrics: Metrics, zoo: Zoo | None, engine: Engine | None) -> Runtime:
    zoo = zoo or Zoo.load(settings.model_dir)  # verifies every sha256; ZooError refuses to start
    engine = engine or Engine(zoo, device=settings.device)
    if settings.broker_url is not None:
        # Scale-out: jobs live in Redis and run on `equirecon worker` processes.
        from service.dispatch.celery import CeleryDispatcher

        celery = CeleryDispatcher(settings, metrics=metrics)
        return Runtime(zoo, engine, celery.jobs, celery)
    jobs = JobStore(settings.result_ttl_s)
    dispatcher: Dispatcher = InProcessDispatcher(
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
    # A bad keys file refuses to start here, before anything is served.
    app.state.keyring = KeyRing.load(settings.api_keys_file) if settings.api_keys_file else None
    for router in (health, metrics):
        app.include_router(router.router)  # probes and metrics stay open
    for router in (operators, models, simulate, reconstructions):
        app.include_router(
            router.router, dependencies=[Depends(get_tenant)], responses=documented(401)
        )
    # Each mapped type gets its own handler: Starlette sends a bare ``Exception``
    # handler through ServerErrorMiddleware, which answers 500 and re-raises.
    handled: list[type[Exception]] = [ServiceError, *LOWER_LAYER, Exception]
    for exc_type in handled:
        app.add_exception_handler(exc_type, _problem)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)  # outermost: sees every status
    problem_openapi(app)
    return app
