"""The in-process dispatcher: worker thread, failure isolation, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from service import equivariance as eq
from service.dispatch.base import Dispatcher
from service.dispatch.inprocess import InProcessDispatcher
from service.engine import ReconOptions
from service.jobs import Job, JobStore
from service.operators.compile import compile_operator
from service.operators.spec import Denoising
from service.worker import Task
from tests.service.fakes import FakeEngine

OP = compile_operator(Denoising(type="denoising", shape=(8, 8)))


def make_task(model: str, y: np.ndarray) -> Task:
    return Task(model, OP, y, ReconOptions(), "flips", tuple(eq.select("flips", (8, 8), 1)))


def wait(store: JobStore, job: Job) -> Job:
    done = threading.Event()
    store.on_done(job, lambda _: done.set())
    assert done.wait(timeout=30)
    return job


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def store() -> JobStore:
    return JobStore(ttl_s=60)


@pytest.fixture
def dispatcher(engine: FakeEngine, store: JobStore) -> Iterator[InProcessDispatcher]:
    d = InProcessDispatcher(engine, store, max_batch=3, max_wait_s=3600.0, max_queue=8)
    d.start()
    yield d
    d.stop()


def test_is_a_dispatcher(dispatcher: InProcessDispatcher) -> None:
    assert isinstance(dispatcher, Dispatcher) and dispatcher.alive()


def test_one_bad_request_fails_alone(
    dispatcher: InProcessDispatcher, engine: FakeEngine, store: JobStore
) -> None:
    ones, zeros = np.ones((8, 8), np.float32), np.zeros((8, 8), np.float32)
    jobs = [store.create("poison", "denoising", make_task("poison", y))
            for y in (ones, zeros, ones)]
    for job in jobs:
        dispatcher.submit(job)  # the third fills the batch: no wait for the hour
    for job in jobs:
        wait(store, job)
    assert [j.status for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert str(jobs[1].error) == "poisoned measurement"
    assert engine.calls[0] == ("reconstruct", "poison", 3)  # tried together first


def test_cancel_a_queued_job(
    dispatcher: InProcessDispatcher, engine: FakeEngine, store: JobStore
) -> None:
    dispatcher.batcher.max_wait_s = 0.0
    engine.gate = threading.Event()  # the worker blocks inside the first batch
    y = np.ones((8, 8), np.float32)
    first = store.create("adjoint", "denoising", make_task("adjoint", y))
    dispatcher.submit(first)
    while first.status == "queued":  # until the worker holds it
        threading.Event().wait(0.001)
    queued = store.create("adjoint", "denoising", make_task("adjoint", 2 * y))
    dispatcher.submit(queued)
    assert dispatcher.queue_depth() == 1
    assert store.cancel(queued.id).status == "cancelled" and dispatcher.cancel(queued.id)
    assert dispatcher.queue_depth() == 0
    engine.gate.set()
    assert wait(store, first).status == "succeeded"
    assert queued.status == "cancelled" and queued.result is None
    assert not dispatcher.cancel(first.id)  # finished: nothing to withdraw
    assert [c for c in engine.calls if c[0] == "reconstruct"] == [
        ("reconstruct", "adjoint", 1), ("reconstruct", "adjoint", 1)]  # x̂ and x̃ of `first`


def test_stop_cancels_the_queue(engine: FakeEngine, store: JobStore) -> None:
    d = InProcessDispatcher(engine, store, max_batch=3, max_wait_s=3600.0, max_queue=8)
    job = store.create("adjoint", "denoising", make_task("adjoint", np.ones((8, 8), np.float32)))
    d.submit(job)  # not started: nobody takes it
    d.stop()
    assert not d.alive() and d.queue_depth() == 0
