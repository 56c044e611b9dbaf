"""RedisJobStore transitions on a real Redis, and the claim-check codec (no pickle)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from service import equivariance as eq
from service.dispatch.codec import decode_outcome, decode_task, encode_outcome, encode_task
from service.dispatch.store import RedisJobStore
from service.engine import ReconOptions
from service.errors import Conflict, JobNotFound, ReconstructionFailed
from service.operators.compile import compile_operator
from service.operators.spec import CT, Inpainting
from service.wire import ArrayModel
from service.worker import EquivarianceResult, Outcome, Task
from tests.service.scaleout.procs import RedisServer

OP = compile_operator(Inpainting(type="inpainting", shape=(8, 8), mask={"random": {"keep": 0.5}}))
TASK = Task("tv", OP, np.arange(64, dtype=np.float32).reshape(8, 8), ReconOptions(lam=0.1),
            "shifts", tuple(eq.select("shifts", (8, 8), 3)), want_map=True)
OUTCOME = Outcome(np.ones((8, 8), np.float32), 7, 0.25,
                  EquivarianceResult(0.1, 10.0, "shifts", 3, np.zeros((8, 8), np.float32)), 1.5)


@pytest.fixture
def store(redis_server: RedisServer) -> RedisJobStore:
    s = RedisJobStore(redis_server.url, ttl_s=60, claim_ttl_s=600, max_deliveries=2)
    s.redis.flushdb()
    return s


def _bytes(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in fields.items()}


def test_codec_round_trips_without_pickle() -> None:
    fields = encode_task(TASK)
    assert all(v.startswith(b"\x93NUMPY") for k, v in fields.items() if k != "meta")
    json.loads(fields["meta"])
    task = decode_task(_bytes(fields))
    assert (task.model, task.options, task.group, task.transforms, task.want_map) == (
        TASK.model, TASK.options, TASK.group, TASK.transforms, TASK.want_map)
    assert task.op.params.keys() == OP.params.keys()
    for name, value in OP.params.items():
        np.testing.assert_array_equal(task.op.params[name], value)
    np.testing.assert_array_equal(task.y, TASK.y)
    outcome = decode_outcome(_bytes(encode_outcome(OUTCOME)))
    np.testing.assert_array_equal(outcome.image, OUTCOME.image)
    assert outcome.equivariance is not None and outcome.equivariance.map is not None
    assert (outcome.iterations, outcome.equivariance.score) == (7, 0.1)


def test_codec_keeps_every_parameter_shape_of_every_family() -> None:
    """0-d parameters (CT fbp_scale) stay 0-d: one rank more breaks the stacked graph input."""
    compiled = compile_operator(CT(type="ct", shape=(16, 16), angles={"uniform": {"count": 5}}))
    ct = replace(compiled, source=None)  # no spec: the arrays themselves travel
    task = decode_task(_bytes(encode_task(Task("pinv", ct, np.zeros((5, 16), np.float32),
                                               ReconOptions()))))
    for name, value in ct.params.items():
        assert task.op.params[name].shape == value.shape, name
        np.testing.assert_array_equal(task.op.params[name], value)


def test_codec_ships_the_spec_when_it_is_smaller_than_the_arrays() -> None:
    ct = compile_operator(CT(type="ct", shape=(128, 128), angles={"uniform": {"count": 50}}))
    fields = encode_task(Task("pinv", ct, np.zeros((50, 128), np.float32), ReconOptions()))
    assert not [k for k in fields if k.startswith("p:")]
    assert sum(map(len, fields.values())) < 60_000  # the arrays are ~50 MB
    task = decode_task(_bytes(fields))
    assert task.op.norm == ct.norm and task.op.params.keys() == ct.params.keys()
    for name, value in ct.params.items():
        np.testing.assert_array_equal(task.op.params[name], value)
    # An inline mask is larger as base64 in the spec than as raw .npy: the arrays travel.
    mask = ArrayModel.of(np.ones((64, 64), np.float32))
    inline = compile_operator(Inpainting(type="inpainting", shape=(64, 64), mask=mask))
    fields = encode_task(Task("pinv", inline, np.zeros((64, 64), np.float32), ReconOptions()))
    assert "p:mask" in fields and "spec" not in json.loads(fields["meta"])["op"]


def test_a_job_finishes_once(store: RedisJobStore) -> None:
    job = store.create("tv", "inpainting", TASK, tenant="acme")
    assert store.enqueue(job.id, max_queue=5) == 1 and store.queue_depth() == 1
    assert store.redis.ttl(f"equirecon:claim:{job.id}") > 60  # the claim check has a TTL
    assert store.start(job.id, "w1") == "run" and store.queue_depth() == 0
    decoded = store.claim(job.id)
    assert decoded is not None and decoded.model == "tv"
    assert store.succeed(job.id, OUTCOME)
    assert not store.succeed(job.id, OUTCOME)  # a duplicate delivery's result is dropped
    assert not store.fail(job.id, ReconstructionFailed("late"))
    done = store.get(job.id, "acme")
    assert done.status == "succeeded" and done.result.iterations == 7
    assert store.claim(job.id) is None  # the claim check is gone with the job done
    assert 0 < store.redis.ttl(f"equirecon:job:{job.id}") <= 60  # kept result_ttl_s
    assert store.start(job.id, "w2") == "succeeded"  # a redelivery does not run it
    with pytest.raises(JobNotFound):
        store.get(job.id, "umbrella")
    with pytest.raises(Conflict):
        store.cancel(job.id, "acme")


def test_dead_letter_after_max_deliveries(store: RedisJobStore) -> None:
    job = store.create("tv", "inpainting", TASK)
    assert [store.start(job.id, "w") for _ in range(3)] == ["run", "run", "dead"]
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error is not None
    problem = failed.error.problem()  # type: ignore[attr-defined]
    assert problem["type"].endswith("dead-letter") and "dead-lettered" in problem["detail"]
    assert store.redis.lrange("equirecon:dead", 0, -1) == [job.id.encode()]


def test_the_queue_is_bounded(store: RedisJobStore) -> None:
    jobs = [store.create("tv", "inpainting", None) for _ in range(3)]
    assert [store.enqueue(j.id, max_queue=2) for j in jobs] == [1, 2, -2]
    store.cancel(jobs[0].id)
    assert store.enqueue(jobs[2].id, max_queue=2) == 2


def test_jobs_whose_message_the_broker_lost_are_found(store: RedisJobStore) -> None:
    waiting, in_flight, lost, started = (store.create("tv", "inpainting", None) for _ in range(4))
    for job in (waiting, in_flight, lost, started):
        store.redis.zadd("equirecon:queued", {job.id: 1.0})  # queued long ago
    message = {"headers": {"id": waiting.id}, "body": "…"}
    store.redis.lpush("equirecon", json.dumps(message))
    store.redis.hset("unacked", "tag", json.dumps([{"headers": {"id": in_flight.id}}, "", "q"]))
    assert store.start(started.id, "w") == "run"
    assert store.lost("equirecon", older_than_s=60) == [lost.id]
    assert store.lost("equirecon", older_than_s=1e12) == []  # not old enough
