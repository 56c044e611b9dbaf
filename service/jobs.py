"""Reconstruction jobs: the state machine, the store interface, and the in-memory store.

States: ``queued -> running -> succeeded | failed``; ``queued | running ->
cancelled``. A job cancelled while running finishes its computation, but the
result is dropped. Finished jobs are forgotten ``ttl_s`` seconds after they
finish (swept lazily on every access, against an injectable clock).

Every job belongs to a tenant (``None`` when the API runs without keys); a
lookup under another tenant is a :class:`JobNotFound`, never a 403, so ids do
not leak. An ``Idempotency-Key`` binds (tenant, key) to the first job created
with it: a retry gets that job back instead of a second run.

:class:`JobStore` keeps jobs in this process (in-process backend); the Celery
backend keeps them in Redis (:mod:`service.dispatch.store`); both satisfy
:class:`Jobs`, which is all the API uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.errors import Conflict, JobNotFound

__all__ = ["STATES", "TERMINAL", "Job", "JobStore", "Jobs", "key_conflict", "not_found"]

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(eq=False)
class Job:
    """One reconstruction request and what became of it."""

    id: str
    model: str
    family: str
    task: Any = field(repr=False)  # the prepared request (worker.Task); dropped when finished
    status: str = "queued"
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    result: Any = field(default=None, repr=False)  # worker.Outcome when succeeded
    error: BaseException | None = None
    tenant: str | None = None
    _callbacks: list[Callable[[Job], None]] = field(default_factory=list, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def queue_ms(self) -> float:
        return 1e3 * ((self.started or self.created) - self.created)


class Jobs(Protocol):
    """What the API needs of a job store (in-memory here, Redis for Celery)."""

    def create(self, model: str, family: str, task: Any, tenant: str | None = None) -> Job:
        """A new ``queued`` job of ``tenant``."""

    def discard(self, job: Job) -> None:
        """Forget a job that never reached a queue (e.g. the queue was full)."""

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job as it is now, or :class:`JobNotFound` (unknown, expired, other tenant)."""

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """queued/running -> cancelled (idempotent); :class:`Conflict` if it already finished."""

    def bind_key(self, tenant: str | None, key: str, fingerprint: str, job: Job) -> Job | None:
        """Bind an Idempotency-Key to ``job``; the job it already names, if any."""

    def unbind_key(self, tenant: str | None, key: str) -> None:
        """Drop a binding whose job never reached a queue."""

    def on_done(self, job: Job, callback: Callable[[Job], None]) -> None:
        """Call ``callback`` (from any thread) once the job is terminal."""

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (for metrics)."""


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no reconstruction {job_id!r} (unknown, or expired after its TTL)")


def key_conflict(key: str) -> Conflict:
    return Conflict(f"Idempotency-Key {key!r} was used for a different request")


class JobStore:
    """Thread-safe map id -> :class:`Job` with the legal state transitions."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._keys: dict[tuple[str | None, str], tuple[str, str]] = {}  # -> fingerprint, job id
        self._lock = threading.Lock()

    def create(self, model: str, family: str, task: Any, tenant: str | None = None) -> Job:
        job = Job(uuid.uuid4().hex, model, family, task, created=self._clock(), tenant=tenant)
        with self._lock:
            self._expire()
            self._jobs[job.id] = job
        return job

    def discard(self, job: Job) -> None:
        """Forget a job that never reached a queue (e.g. the queue was full)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or :class:`JobNotFound` (unknown, expired, or another tenant's)."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None or job.tenant != tenant:
            raise not_found(job_id)
        return job

    def bind_key(self, tenant: str | None, key: str, fingerprint: str, job: Job) -> Job | None:
        with self._lock:
            self._expire()
            bound = self._keys.get((tenant, key))
            prior = self._jobs.get(bound[1]) if bound is not None else None
            if bound is None or prior is None:
                self._keys[(tenant, key)] = (fingerprint, job.id)
                return None
        if bound[0] != fingerprint:
            raise key_conflict(key)
        return prior

    def unbind_key(self, tenant: str | None, key: str) -> None:
        with self._lock:
            self._keys.pop((tenant, key), None)

    def start(self, job: Job) -> bool:
        """queued -> running; True while it runs, False if it was cancelled meanwhile."""
        with self._lock:
            if job.status == "queued":
                job.status, job.started = "running", self._clock()
            return job.status == "running"

    def finish(self, job: Job, result: Any = None, error: BaseException | None = None) -> None:
        """running/queued -> succeeded or failed; a cancelled job keeps its state."""
        with self._lock:
            if job.done:
                return
            job.status = "failed" if error is not None else "succeeded"
            job.result, job.error = result, error
            self._close(job)
        self._notify(job)

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """queued/running -> cancelled (idempotent); :class:`Conflict` if it already finished."""
        job = self.get(job_id, tenant)
        with self._lock:
            if job.status in ("succeeded", "failed"):
                raise Conflict(f"reconstruction {job_id} already {job.status}; nothing to cancel")
            if job.status == "cancelled":
                return job
            job.status = "cancelled"
            self._close(job)
        self._notify(job)
        return job

    def on_done(self, job: Job, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` once the job is terminal (now, if it already is)."""
        with self._lock:
            if not job.done:
                job._callbacks.append(callback)
                return
        callback(job)

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (for metrics)."""
        with self._lock:
            self._expire()
            counted = Counter(job.status for job in self._jobs.values())
        return {state: counted.get(state, 0) for state in STATES}

    def _close(self, job: Job) -> None:
        job.finished = self._clock()
        job.task = None  # the measurements and operator tensors are no longer needed

    def _notify(self, job: Job) -> None:
        callbacks, job._callbacks = job._callbacks, []
        for callback in callbacks:
            callback(job)

    def _expire(self) -> None:
        horizon = self._clock() - self.ttl_s
        for key, job in list(self._jobs.items()):
            if job.finished is not None and job.finished <= horizon:
                del self._jobs[key]
        live = self._jobs
        self._keys = {k: v for k, v in self._keys.items() if v[1] in live}
