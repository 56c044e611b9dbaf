"""A real redis-server (AOF on, temp dir, free loopback port), the API on the Celery
backend, and ``equirecon worker`` subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from service.config import Settings
from service.main import create_app
from tests.service.conftest import ZOO
from tests.service.live import LiveServer
from tests.service.scaleout.procs import RedisServer, WorkerProcess
from tests.service.tenancy import write_keys

#: Short job time limit, so the visibility timeout (and a crashed worker's
#: redelivery) is seconds, not minutes. Test jobs take milliseconds.
JOB_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    keys = write_keys(tmp_path_factory.mktemp("keys") / "keys.json")
    return Settings(
        broker_url=redis_server.url, api_keys_file=keys, model_dir=ZOO, device="cpu",
        job_timeout_s=JOB_TIMEOUT_S, max_batch=4, max_wait_ms=2, max_queue=200,
        result_ttl_s=600, request_timeout_s=30,
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def http(api: LiveServer) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    settings: Settings, rdb: redis.Redis, tmp_path: Path
) -> Iterator[StartWorker]:
    """``start_worker("w1")``: a ready ``equirecon worker`` (``ready=False``: just started);
    all are stopped after the test."""
    started: list[WorkerProcess] = []
    env = {
        "EQUIRECON_BROKER_URL": str(settings.broker_url), "EQUIRECON_DEVICE": "cpu",
        "EQUIRECON_MODEL_DIR": str(ZOO), "EQUIRECON_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
        "EQUIRECON_MAX_BATCH": "4", "EQUIRECON_MAX_WAIT_MS": "2",
        "EQUIRECON_RESULT_TTL_S": "600", "OMP_NUM_THREADS": "1",
    }

    def start(name: str, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(name, env, tmp_path / f"{name}.log")
        started.append(worker)
        return worker.wait_ready(rdb) if ready else worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        rdb.delete(f"equirecon:worker:{worker.name}")
