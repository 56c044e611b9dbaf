"""The job store: state machine, TTL against an injectable clock, cancellation, callbacks."""

from __future__ import annotations

import pytest

from service.errors import Conflict, JobNotFound
from service.jobs import STATES, JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> JobStore:
    return JobStore(ttl_s=10.0, clock=clock)


def test_lifecycle_queued_running_succeeded(store: JobStore, clock: Clock) -> None:
    job = store.create("tv", "denoising", task="payload")
    assert store.get(job.id) is job and job.status == "queued" and not job.done
    clock.now += 0.25
    assert store.start(job) and job.status == "running"
    assert job.queue_ms == pytest.approx(250.0)
    assert store.start(job)  # idempotent while running (a batch retried request by request)
    store.finish(job, result="x")
    assert (job.status, job.result, job.task) == ("succeeded", "x", None)
    assert store.counts() == dict.fromkeys(STATES, 0) | {"succeeded": 1}


def test_failure_is_recorded(store: JobStore) -> None:
    job = store.create("tv", "ct", task=None)
    store.start(job)
    store.finish(job, error=ValueError("boom"))
    assert job.status == "failed" and isinstance(job.error, ValueError)


def test_finished_jobs_expire_after_the_ttl(store: JobStore, clock: Clock) -> None:
    job = store.create("tv", "ct", task=None)
    clock.now += 1000.0  # unfinished jobs never expire
    store.start(job)
    store.finish(job, result=1)
    clock.now += 9.999
    assert store.get(job.id) is job
    clock.now += 0.002
    with pytest.raises(JobNotFound, match="expired"):
        store.get(job.id)


def test_cancel_queued_then_start_refuses(store: JobStore) -> None:
    job = store.create("tv", "mri", task="payload")
    assert store.cancel(job.id).status == "cancelled"
    assert store.cancel(job.id).status == "cancelled"  # idempotent
    assert not store.start(job)
    store.finish(job, result="late")  # a result arriving after cancel is dropped
    assert job.status == "cancelled" and job.result is None


def test_cancel_running_drops_the_result(store: JobStore) -> None:
    job = store.create("tv", "mri", task=None)
    store.start(job)
    store.cancel(job.id)
    store.finish(job, result="late")
    assert job.status == "cancelled" and job.result is None


@pytest.mark.parametrize("error", [None, RuntimeError("x")])
def test_cancel_after_finish_is_a_conflict(store: JobStore, error: Exception | None) -> None:
    job = store.create("tv", "mri", task=None)
    store.finish(job, result=1, error=error)
    with pytest.raises(Conflict, match="already"):
        store.cancel(job.id)


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get("nope")
    with pytest.raises(JobNotFound):
        store.cancel("nope")


def test_on_done_fires_once_now_or_later(store: JobStore) -> None:
    fired: list[str] = []
    job = store.create("tv", "ct", task=None)
    store.on_done(job, lambda j: fired.append(j.status))
    store.finish(job, result=1)
    store.finish(job, result=2)
    store.on_done(job, lambda j: fired.append("late " + j.status))
    assert fired == ["succeeded", "late succeeded"]


def test_discard_forgets_a_job(store: JobStore) -> None:
    job = store.create("tv", "ct", task=None)
    store.discard(job)
    with pytest.raises(JobNotFound):
        store.get(job.id)
