"""The Celery + Redis backend end to end: real redis-server, real worker processes.

Durability checks: a worker killed with SIGKILL mid-run, Redis stopped and
restarted from its AOF, the API restarted; plus keys, tenants, idempotency
and the bounded queue. Jobs are cheap (small pinv/TV), so the checks are
about what happens to jobs, never about how long they take.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.config import Settings
from service.main import create_app
from service.wire import decode_array, encode_array
from tests.service.live import LiveServer
from tests.service.scaleout.conftest import StartWorker
from tests.service.scaleout.procs import RedisServer
from tests.service.tenancy import KEYS, bearer, check_auth_and_tenants, check_idempotency

ACME = bearer("acme")
ASYNC = ACME | {"Prefer": "respond-async"}


def body(i: int, size: int = 16, model: str = "pinv", **extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    y = rng.random((size, size), dtype=np.float32)
    return {"model": model, "operator": {"type": "denoising", "shape": [size, size]},
            "measurements": encode_array(y)} | extra


def submit(http: httpx.Client, n: int, **kwargs: Any) -> list[str]:
    ids = []
    for i in range(n):
        r = http.post("/v1/reconstructions", json=body(i, **kwargs), headers=ASYNC)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def wait_all(http: httpx.Client, ids: list[str], timeout: float = 120.0) -> dict[str, Any]:
    """Poll until every job is terminal (the timeout only turns a hang into a failure)."""
    done: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs never finished"
        for job_id in ids:
            if job_id not in done:
                job = http.get(f"/v1/reconstructions/{job_id}", headers=ACME).json()
                if job["status"] not in ("queued", "running"):
                    done[job_id] = job
        time.sleep(0.1)
    return done


def fields(rdb: redis.Redis, job_id: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = rdb.hgetall(f"equirecon:job:{job_id}")  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items() if k not in (b"image", b"map")}


def test_redis_runs_with_aof_and_noeviction(rdb: redis.Redis) -> None:
    assert rdb.config_get("appendonly") == {"appendonly": "yes"}
    assert rdb.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_sync_request_and_readiness(http: httpx.Client, start_worker: StartWorker) -> None:
    assert http.get("/readyz").status_code == 503  # no worker yet
    start_worker("w-sync")
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/reconstructions", json=body(0), headers=ACME)
    assert r.status_code == 200, r.text
    job = r.json()
    y = decode_array(**body(0)["measurements"])
    np.testing.assert_allclose(decode_array(**job["image"]), y, atol=1e-5)  # pinv of denoising
    assert job["equivariance"]["group"] == "D4"
    image = http.get(f"/v1/reconstructions/{job['id']}/image", headers=ACME)
    assert image.status_code == 200 and image.content.startswith(b"\x93NUMPY")


def test_keys_tenants_and_idempotency(
    http: httpx.Client, start_worker: StartWorker, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    start_worker("w-auth")
    check_auth_and_tenants(http, body(1))
    check_idempotency(http, body(2))
    # Neither the API nor the worker logs keys, request bodies or pixel data.
    logs = caplog.text + (tmp_path / "w-auth.log").read_text(encoding="utf-8")
    secrets = [*KEYS.values(), body(1)["measurements"]["data"][:40],
               body(2)["measurements"]["data"][:40]]
    assert "equirecon.reconstruct" in logs and not [s for s in secrets if s in logs]


def test_a_job_over_the_time_limit_fails_with_a_reason(
    http: httpx.Client, start_worker: StartWorker
) -> None:
    start_worker("w-fail")
    bad = body(3, model="tv", size=256, options={"tv": {"max_iter": 5000, "tol": 1e-9}})
    r = http.post("/v1/reconstructions", json=bad, headers=ASYNC)
    (job,) = wait_all(http, [r.json()["id"]]).values()
    # 5000 TV iterations on 256x256, then 7 more for the score: far past the 3 s limit.
    assert job["status"] == "failed", job
    assert job["error"]["status"] == 500 and "time limit of 3 s" in job["error"]["detail"]


def test_cancel_queued_and_running(
    http: httpx.Client, rdb: redis.Redis, start_worker: StartWorker
) -> None:
    (queued,) = submit(http, 1)
    assert http.delete(f"/v1/reconstructions/{queued}", headers=ACME).json()["status"] == (
        "cancelled")
    start_worker("w-cancel")
    (after,) = submit(http, 1)
    assert wait_all(http, [queued, after]) and fields(rdb, queued)["status"] == "cancelled"
    assert http.delete(f"/v1/reconstructions/{after}", headers=ACME).status_code == 409
    assert int(fields(rdb, queued).get("deliveries", "0")) == 0  # skipped, never started


def test_a_worker_killed_mid_run_loses_no_job(
    http: httpx.Client, rdb: redis.Redis, start_worker: StartWorker
) -> None:
    ids = submit(http, 100, size=32, model="tv", options={"tv": {"max_iter": 150, "tol": 1e-9}})
    victim, survivor = start_worker("w-victim", ready=False), start_worker("w-survivor", False)
    victim.wait_ready(rdb), survivor.wait_ready(rdb)

    def victim_runs_a_job() -> bool:
        running = [m.decode() for m in rdb.smembers("equirecon:running")]  # type: ignore[union-attr]
        return any(rdb.hget(f"equirecon:job:{i}", "worker") == b"w-victim" for i in running)

    deadline = time.monotonic() + 60
    while not victim_runs_a_job():
        assert time.monotonic() < deadline, "the victim never ran a job"
    victim.kill()
    jobs = wait_all(http, ids)
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    records = [fields(rdb, i) for i in ids]
    assert all(r["finishes"] == "1" for r in records)  # no job completed twice
    redelivered = [r for r in records if int(r["deliveries"]) > 1]
    assert redelivered, "the killed worker held no job"
    assert all(r["worker"] == survivor.name for r in redelivered)


def test_redis_restart_keeps_queued_jobs(
    http: httpx.Client, redis_server: RedisServer, start_worker: StartWorker
) -> None:
    ids = submit(http, 20)
    redis_server.stop()
    down = http.get(f"/v1/reconstructions/{ids[0]}", headers=ACME)
    assert down.status_code == 503, down.text
    assert [http.get(p).status_code for p in ("/healthz", "/readyz", "/metrics")] == [
        200, 503, 200]
    redis_server.start()  # same port and directory: replays the AOF
    assert {http.get(f"/v1/reconstructions/{i}", headers=ACME).json()["status"]
            for i in ids} == {"queued"}
    start_worker("w-after-restart")
    assert {j["status"] for j in wait_all(http, ids).values()} == {"succeeded"}


def test_an_api_restart_loses_nothing(settings: Settings, start_worker: StartWorker) -> None:
    with LiveServer(create_app(settings)) as first, first.client() as client:
        queued = submit(client, 5)
    with LiveServer(create_app(settings)) as second, second.client() as client:
        assert {client.get(f"/v1/reconstructions/{i}", headers=ACME).json()["status"]
                for i in queued} == {"queued"}
        start_worker("w-api-restart")
        done = wait_all(client, queued)
    assert {j["status"] for j in done.values()} == {"succeeded"}
    with LiveServer(create_app(settings)) as third, third.client() as client:
        again = wait_all(client, queued)  # a third replica answers the same
    assert {i: j["image"] for i, j in again.items()} == {i: j["image"] for i, j in done.items()}


def test_a_full_queue_answers_429(settings: Settings) -> None:
    small = settings.model_copy(update={"max_queue": 3})
    with LiveServer(create_app(small)) as server, server.client() as client:
        ids = submit(client, 3)  # no worker runs: they stay queued
        full = client.post("/v1/reconstructions", json=body(9), headers=ASYNC)
        assert full.status_code == 429, full.text
        assert int(full.headers["retry-after"]) >= 1
        for job_id in ids:
            assert client.delete(f"/v1/reconstructions/{job_id}", headers=ACME).status_code == 200
        assert client.post("/v1/reconstructions", json=body(9), headers=ASYNC).status_code == 202



def test_a_job_whose_message_was_lost_is_sent_again(
    settings: Settings, rdb: redis.Redis, start_worker: StartWorker
) -> None:
    from service.dispatch.store import RedisJobStore
    from service.engine import ReconOptions
    from service.operators.compile import compile_operator
    from service.operators.spec import Denoising
    from service.worker import Task

    assert settings.broker_url is not None
    store = RedisJobStore(settings.broker_url, ttl_s=60, claim_ttl_s=600)
    op = compile_operator(Denoising(type="denoising", shape=(16, 16)))
    task = Task("pinv", op, np.ones((16, 16), np.float32), ReconOptions())
    job = store.create("pinv", "denoising", task, tenant="acme")
    # Queued long ago, but its message is nowhere: what a worker killed between
    # popping a message and recording it as unacknowledged leaves behind.
    rdb.zadd("equirecon:queued", {job.id: time.time() - 3600})
    start_worker("w-sweeper")
    deadline = time.monotonic() + 60
    while store.get(job.id, "acme").status != "succeeded":
        assert time.monotonic() < deadline, "the lost job was never sent again"
        time.sleep(0.1)
    store.close()


def test_a_running_worker_rides_out_a_redis_restart(
    http: httpx.Client, rdb: redis.Redis, redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_worker("w-ride-out")
    ids = submit(http, 30, size=32, model="tv", options={"tv": {"max_iter": 150, "tol": 1e-9}})
    redis_server.stop()  # while the worker is busy with them
    redis_server.start()
    jobs = wait_all(http, ids)
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    assert all(fields(rdb, i)["finishes"] == "1" for i in ids)
