"""The default backend: a micro-batcher and one worker thread in this process.

One thread per device: the process runs one :class:`~service.engine.Engine`
(onnxruntime picks CUDA when present, else CPU). More GPUs scale out as
more processes (DESIGN.md §3), so this backend needs no device bookkeeping.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

from service.batcher import Batcher
from service.engine import Engine
from service.jobs import Job, JobStore
from service.metrics import Metrics
from service.worker import Outcome, batch_key, run_batch

__all__ = ["InProcessDispatcher"]

_log = logging.getLogger("equirecon")
_CANCELLED = RuntimeError("cancelled")


class InProcessDispatcher:
    """Queue jobs into a :class:`Batcher`; a worker thread runs same-key batches on the Engine."""

    def __init__(
        self,
        engine: Engine,
        jobs: JobStore,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine, self.jobs, self.metrics = engine, jobs, metrics
        self.batcher: Batcher[Job, Outcome] = Batcher(
            lambda job: batch_key(job.task),
            max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue, adaptive=True,
        )
        self._futures: dict[str, Future[Outcome]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="equirecon-worker-0", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the queued jobs and wait up to ``timeout`` s for the running batch."""
        self._stop.set()
        self.batcher.close()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def queue_depth(self) -> int:
        return self.batcher.depth()

    #: ``submit`` only appends to a queue: the API may call it on its event loop.
    blocking_submit = False

    def announce(self) -> AbstractContextManager[None]:
        """A request is on its way (decoding, validation): partial batches wait for it."""
        return self.batcher.announce()

    def submit(self, job: Job) -> None:
        future = self.batcher.submit(job)
        with self._lock:
            self._futures[job.id] = future
        future.add_done_callback(lambda f: self._resolve(job, f))

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            future = self._futures.get(job_id)
        return future is not None and future.cancel()

    def _resolve(self, job: Job, future: Future[Outcome]) -> None:
        with self._lock:
            self._futures.pop(job.id, None)
        if future.cancelled() or job.status == "cancelled":
            return  # the store already says cancelled; any result is dropped
        error = future.exception()
        if error is not None:
            _log.warning("reconstruction %s failed", job.id, exc_info=error)
        self.jobs.finish(job, None if error else future.result(), error)
        if self.metrics is not None:
            self.metrics.finished(job)

    def _run(self, batch: list[Job]) -> list[Any]:
        live = [job for job in batch if self.jobs.start(job)]
        if self.metrics is not None:
            self.metrics.batch(len(live))
        if not live:
            return [_CANCELLED] * len(batch)
        outcomes = iter(run_batch(self.engine, [j.task for j in live], self.batcher.max_batch))
        # A job cancelled after it left the queue gets a placeholder the store ignores.
        return [next(outcomes) if job in live else _CANCELLED for job in batch]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self.batcher.next_batch(timeout=0.5)
            if batch:
                self.batcher.run(batch, self._run)
