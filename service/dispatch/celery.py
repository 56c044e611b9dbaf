"""The scale-out backend: Celery over Redis, jobs and their inputs in Redis.

API side, :class:`CeleryDispatcher` stores each job and its inputs in Redis
(:class:`~service.dispatch.store.RedisJobStore`; the inputs are a claim check
with a TTL) and sends a JSON task message that carries only the job id. A
bounded queue (``max_queue`` jobs waiting across all workers) answers 429.

Worker side, ``equirecon worker`` (:func:`run_worker`) loads and warms up the
zoo, then runs a Celery worker with the ``threads`` (or ``solo``) pool, never
prefork (CUDA does not survive fork). Task threads hand jobs to the same
micro-batcher as the in-process backend, so concurrent same-shape jobs share
an engine call. One worker process per GPU, pinned by ``CUDA_VISIBLE_DEVICES``.

Durability: ``acks_late`` + ``reject_on_worker_lost``, so a job whose worker
dies is redelivered after the visibility timeout (above the longest allowed
job, ``job_timeout_s``). Each delivery is counted; past ``max_deliveries`` the
job is dead-lettered and reports ``failed`` with the reason. Only the first
finish of a job applies, so a redelivered job never completes twice.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from service.config import Settings
from service.dispatch.inprocess import InProcessDispatcher
from service.dispatch.store import RedisJobStore
from service.engine import Engine, ReconOptions
from service.errors import NotReady, QueueFull, ReconstructionFailed, ServiceError, to_service_error
from service.jobs import Job, JobStore
from service.metrics import Metrics
from service.operators.compile import compile_operator
from service.operators.spec import Denoising
from service.worker import Task, run_batch
from service.zoo import Zoo

__all__ = [
    "QUEUE", "TASK", "CeleryDispatcher", "Worker", "make_celery", "run_worker", "send",
    "worker_name",
]

QUEUE = "equirecon"
TASK = "equirecon.reconstruct"
HEARTBEAT_S = 2.0
_log = logging.getLogger("equirecon")


def make_celery(settings: Settings) -> Celery:
    """The Celery app: JSON only, late acks, redelivery after the visibility timeout."""
    app = Celery("equirecon", broker=settings.broker_url, set_as_current=False)
    visibility = settings.visibility_timeout_s
    app.conf.update(
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True, task_ignore_result=True,
        task_default_queue=QUEUE, worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": visibility,
            # Sweep for messages of dead workers often enough for a low timeout.
            "unacked_restore_interval": max(1, min(10, math.floor(visibility / 4))),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=False, worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


def send(app: Celery, job_id: str) -> None:
    """Queue the task of a job: a JSON message that carries only the job id."""
    app.send_task(
        TASK, args=[job_id], task_id=job_id, queue=QUEUE, retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )


class CeleryDispatcher:
    """:class:`~service.dispatch.base.Dispatcher` that queues jobs for ``equirecon worker``."""

    def __init__(
        self, settings: Settings, *, metrics: Metrics | None = None,
        store: RedisJobStore | None = None,
    ) -> None:
        assert settings.broker_url is not None
        self.settings, self.metrics = settings, metrics
        self.jobs = store or RedisJobStore(
            settings.broker_url, ttl_s=settings.result_ttl_s,
            claim_ttl_s=settings.claim_ttl_s, max_deliveries=settings.max_deliveries,
        )
        self.celery = make_celery(settings)

    def start(self) -> None:
        """Nothing to start here: the workers are separate processes."""

    def stop(self) -> None:
        self.jobs.close()

    #: ``submit`` writes to Redis: the API calls it from a thread.
    blocking_submit = True

    def announce(self) -> AbstractContextManager[None]:
        """Nothing batches on the API side: the workers' batchers see their own deliveries."""
        return nullcontext()

    def submit(self, job: Job) -> None:
        depth = self.jobs.enqueue(job.id, self.settings.max_queue)
        if depth <= 0:
            raise QueueFull(
                f"{-depth + 1} reconstructions are queued; retry later",
                retry_after_s=self._retry_after(-depth + 1),
            )
        try:
            send(self.celery, job.id)
        except Exception as exc:
            raise NotReady("the broker (Redis) is unavailable; retry") from exc

    def cancel(self, job_id: str) -> bool:
        # The store already says cancelled: a worker that takes the message skips it,
        # and a running job's result is dropped when it finishes.
        return False

    def alive(self) -> bool:
        try:
            return bool(self.jobs.workers())
        except ServiceError:
            return False

    def queue_depth(self) -> int:
        return self.jobs.queue_depth()

    def _retry_after(self, depth: int) -> int:
        try:
            workers = max(1, len(self.jobs.workers()))
        except ServiceError:
            workers = 1
        return int(min(60, max(1, math.ceil(depth / (workers * self.settings.max_batch)))))


class Worker:
    """One worker process: the engine, the micro-batcher, and the job transitions in Redis."""

    def __init__(
        self, settings: Settings, name: str, *, engine: Any = None,
        republish: Callable[[str], None] | None = None,
    ) -> None:
        assert settings.broker_url is not None
        self.settings, self.name, self.republish = settings, name, republish
        self.zoo = Zoo.load(settings.model_dir)
        self.engine = engine or Engine(self.zoo, device=settings.device)
        self.local = JobStore(ttl_s=60.0)
        self.batcher = InProcessDispatcher(
            self.engine, self.local, max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1e3, max_queue=max(1024, settings.max_queue),
        )
        self.store = RedisJobStore(
            settings.broker_url, ttl_s=settings.result_ttl_s,
            claim_ttl_s=settings.claim_ttl_s, max_deliveries=settings.max_deliveries,
        )
        self._stop = threading.Event()

    def warm_up(self) -> None:
        """One small batch through every model, so the first job pays no first-call cost."""
        op = compile_operator(Denoising(type="denoising", shape=(8, 8)))
        y = np.full((8, 8), 0.5, np.float32)
        for model, card in self.zoo.cards.items():
            # Learned models serve one family at a trained shape: their sessions are
            # loaded already, and a denoising probe would be refused by their card.
            if "denoising" in card.families and card.kind != "learned":
                run_batch(self.engine, [Task(model, op, y, ReconOptions(max_iter=2))])

    def start(self) -> None:
        self.batcher.start()
        threading.Thread(target=self._beat, name="equirecon-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.batcher.stop(timeout=1.0)  # a batch past its time limit is not worth waiting for
        try:
            self.store.redis.delete(self.store.key("worker", self.name))
        except Exception:
            _log.warning("could not remove the heartbeat of %s", self.name)

    def _beat(self) -> None:
        sweep_every = max(1, round(self.settings.visibility_timeout_s / 2 / HEARTBEAT_S))
        beats = 0
        while not self._stop.is_set():
            try:
                self.store.heartbeat(self.name, 3 * HEARTBEAT_S)
                beats += 1
                if beats % sweep_every == 0:
                    self.sweep()
            except Exception:
                _log.warning("heartbeat to Redis failed; retrying")
            self._stop.wait(HEARTBEAT_S)

    def sweep(self) -> list[str]:
        """Send again the jobs whose task message the broker lost (one worker at a time)."""
        lock = self.store.key("sweeper")
        ttl = max(1, int(self.settings.visibility_timeout_s / 2))
        if self.republish is None or not self.store.redis.set(lock, self.name, nx=True, ex=ttl):
            return []
        lost = self.store.lost(QUEUE, self.settings.visibility_timeout_s)
        for job_id in lost:
            self.republish(job_id)
        if lost:
            _log.warning("sent %d job(s) again whose task message was lost", len(lost))
        return lost

    def run(self, job_id: str) -> str:
        """Run one delivered job to a terminal state; returns what happened."""
        state = self.store.start(job_id, self.name)
        if state != "run":
            _log.info("job %s not run: %s", job_id, state)
            return state
        # Announced from the claim to the submit: concurrent deliveries fill one batch.
        with self.batcher.announce():
            task = self.store.claim(job_id)
            if task is None:
                self.store.fail(job_id, ReconstructionFailed(
                    "the job's inputs expired before a worker took it"))
                return "failed"
            local = self.local.create(task.model, task.op.family, task)
            done = threading.Event()
            self.local.on_done(local, lambda _: done.set())
            self.batcher.submit(local)
        if not done.wait(self.settings.job_timeout_s):
            self.local.cancel(local.id)
            self.batcher.cancel(local.id)
            self.store.fail(job_id, ReconstructionFailed(
                f"the reconstruction ran over the time limit of {self.settings.job_timeout_s:g} s"))
            return "timed out"
        if local.status == "succeeded":
            applied = self.store.succeed(job_id, local.result)
            return "succeeded" if applied else "dropped"
        error = to_service_error(
            local.error or RuntimeError(local.status),
            ReconstructionFailed("the worker failed on this request; see the worker log"),
        )
        self.store.fail(job_id, error)
        return "failed"


def worker_name(settings: Settings, name: str | None) -> str:
    if name:
        return name
    gpu = settings.cuda_visible_devices
    suffix = f"gpu{gpu.replace(',', '-')}" if gpu else "cpu"
    return f"equirecon-{suffix}@{socket.gethostname()}"


def run_worker(
    settings: Settings, *, name: str | None = None, pool: str = "threads",
    concurrency: int | None = None, loglevel: str = "INFO",
) -> None:
    """``equirecon worker``: load, warm up, then consume jobs until stopped."""
    if pool not in ("threads", "solo"):
        raise ValueError("the worker pool must be threads or solo (never prefork with CUDA)")
    hostname = worker_name(settings, name)
    app = make_celery(settings)
    worker = Worker(settings, hostname, republish=lambda job_id: send(app, job_id))
    worker.warm_up()

    @app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def reconstruct(self: Any, job_id: str) -> str:
        try:
            return worker.run(job_id)
        except NotReady as exc:  # Redis went away mid-job: deliver again once it is back
            raise self.retry(exc=exc, countdown=1.0, max_retries=None) from exc

    worker_ready.connect(lambda **_: worker.start(), weak=False)
    worker_shutdown.connect(lambda **_: worker.stop(), weak=False)
    _log.info("worker %s: providers %s", hostname, getattr(worker.engine, "providers", "?"))
    app.worker_main([
        "worker", f"--pool={pool}", f"--concurrency={concurrency or settings.max_batch}",
        "--queues", QUEUE, f"--hostname={hostname}", f"--loglevel={loglevel}",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ])
