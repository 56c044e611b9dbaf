"""In-memory store of reconstruction jobs: state machine, result TTL, cancellation.

States: ``queued -> running -> succeeded | failed``; ``queued | running ->
cancelled``. A job cancelled while running finishes its computation, but the
result is dropped. Finished jobs are forgotten ``ttl_s`` seconds after they
finish (swept lazily on every access, against an injectable clock).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.errors import Conflict, JobNotFound

__all__ = ["STATES", "TERMINAL", "Job", "JobStore"]

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
    _callbacks: list[Callable[[Job], None]] = field(default_factory=list, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def queue_ms(self) -> float:
        return 1e3 * ((self.started or self.created) - self.created)


class JobStore:
    """Thread-safe map id -> :class:`Job` with the legal state transitions."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def create(self, model: str, family: str, task: Any) -> Job:
        job = Job(uuid.uuid4().hex, model, family, task, created=self._clock())
        with self._lock:
            self._expire()
            self._jobs[job.id] = job
        return job

    def discard(self, job: Job) -> None:
        """Forget a job that never reached a queue (e.g. the queue was full)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def get(self, job_id: str) -> Job:
        """The job, or :class:`JobNotFound` (unknown or expired)."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no reconstruction {job_id!r} (unknown, or expired after its TTL)")
        return job

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

    def cancel(self, job_id: str) -> Job:
        """queued/running -> cancelled (idempotent); :class:`Conflict` if it already finished."""
        job = self.get(job_id)
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
