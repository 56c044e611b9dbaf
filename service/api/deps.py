"""Named dependencies: route signatures read like prose (``zoo: ZooDep``).

They are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, and the six hops of a reconstruction request
cost more than the whole pinv reconstruction (py-spy, bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import KeyRing
from service.config import Settings
from service.dispatch.base import Dispatcher
from service.engine import Engine
from service.errors import NotReady
from service.jobs import Jobs
from service.metrics import Metrics
from service.zoo import Zoo

__all__ = [
    "DispatcherDep",
    "EngineDep",
    "JobsDep",
    "MetricsDep",
    "Runtime",
    "RuntimeDep",
    "SettingsDep",
    "TenantDep",
    "ZooDep",
]


@dataclass(frozen=True)
class Runtime:
    """What the lifespan loads: the verified zoo, the engine, the job store and the workers."""

    zoo: Zoo
    engine: Engine
    jobs: Jobs
    dispatcher: Dispatcher


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("models are not loaded yet")
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_zoo(runtime: RuntimeDep) -> Zoo:
    return runtime.zoo


async def get_engine(runtime: RuntimeDep) -> Engine:
    return runtime.engine


async def get_jobs(runtime: RuntimeDep) -> Jobs:
    return runtime.jobs


async def get_dispatcher(runtime: RuntimeDep) -> Dispatcher:
    return runtime.dispatcher


ZooDep = Annotated[Zoo, Depends(get_zoo)]
EngineDep = Annotated[Engine, Depends(get_engine)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]

_bearer = HTTPBearer(
    auto_error=False, description="API key; required when EQUIRECON_API_KEYS_FILE is set"
)


async def get_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The caller's tenant (401 without a valid key); ``None`` when the API runs without keys."""
    keyring: KeyRing | None = request.app.state.keyring
    if keyring is None:
        return None
    return keyring.tenant(request.headers.get("authorization"))


TenantDep = Annotated[str | None, Depends(get_tenant)]
