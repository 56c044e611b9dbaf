"""The one small interface between the API and whatever runs the jobs."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from service.jobs import Job

__all__ = ["Dispatcher"]


@runtime_checkable
class Dispatcher(Protocol):
    """Runs jobs somewhere and reports through the :class:`~service.jobs.JobStore`.

    ``submit`` queues a job (raising :class:`~service.errors.QueueFull` when
    full); the backend moves it to ``running`` and finishes it in the store.
    ``blocking_submit`` says whether ``submit`` may block on I/O (then the API
    calls it from a thread). ``announce`` wraps the preparation and submission of
    one request, so that a micro-batcher that closes partial batches early knows
    more are coming (a no-op where nothing batches on this side).
    """

    blocking_submit: bool

    def announce(self) -> AbstractContextManager[None]:
        """Context of one request from arrival to ``submit``."""

    def start(self) -> None:
        """Start the workers (called once by the app lifespan)."""

    def stop(self) -> None:
        """Stop the workers; queued jobs are cancelled."""

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its ``task`` is a :class:`~service.worker.Task`)."""

    def cancel(self, job_id: str) -> bool:
        """Withdraw a queued job; False if it is not queued here (running or unknown)."""

    def alive(self) -> bool:
        """True while the workers run (readiness)."""

    def queue_depth(self) -> int:
        """Jobs waiting for a worker."""
