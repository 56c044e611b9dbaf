"""Jobs in Redis: state, claim checks, queue accounting, dead letters (Celery backend).

Every API replica and every worker shares this state, so any replica answers
for any job and an API restart loses nothing. Keys (``equirecon:`` prefix):

- ``job:<id>``: hash of the job (status, tenant, timestamps, deliveries,
  worker, error problem JSON, result meta JSON, ``image``/``map`` as .npy).
  Unfinished jobs live up to the claim TTL; finished ones ``result_ttl_s``.
- ``claim:<id>``: the job's inputs (:mod:`service.dispatch.codec`), the claim
  check the task message refers to by id; TTL; deleted once the job is done.
- ``queued``: sorted set (score = submit time) of jobs waiting for a worker:
  its size is the queue depth that ``max_queue`` bounds (429 past it).
- ``running``: set of jobs a worker has started.
- ``key:<tenant>:<sha256(key)>``: Idempotency-Key -> fingerprint and job id.
- ``dead``: list of dead-lettered job ids (delivered ``max_deliveries``
  times without finishing: their workers died); the job reports ``failed``.
- ``worker:<name>``: heartbeat of a ready worker (short TTL).
- channel ``equirecon:done``: job ids as they become terminal.

Every transition is one Lua script, so a redelivered job never finishes
twice: only the first ``finish`` of a queued or running job applies.
Redis errors surface as :class:`~service.errors.NotReady` (503).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from service.dispatch.codec import decode_outcome, decode_task, encode_outcome, encode_task
from service.errors import Conflict, NotReady, ServiceError, StoredProblem
from service.jobs import STATES, Job, key_conflict, not_found
from service.worker import Outcome, Task

__all__ = ["PREFIX", "RedisJobStore"]

PREFIX = "equirecon:"
_log = logging.getLogger("equirecon")

# KEYS: job, queued, running, claim; ARGV: id, now, max_deliveries, worker, ttl, dead problem
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
local n = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('ZREM', KEYS[2], ARGV[1])
if n > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished', ARGV[2], 'error', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'finishes', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
  redis.call('LPUSH', KEYS[5], ARGV[1])
  redis.call('LTRIM', KEYS[5], 0, 9999)
  redis.call('PUBLISH', KEYS[6], ARGV[1])
  return 'dead'
end
if status == 'queued' then redis.call('HSET', KEYS[1], 'started', ARGV[2]) end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
return 'run'
"""

# KEYS: job, queued, running, claim, channel; ARGV: id, status, now, ttl, then field/value pairs
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished', ARGV[3])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], 'finishes', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('PUBLISH', KEYS[5], ARGV[1])
return 1
"""

# KEYS: queued; ARGV: id, now, max_queue, horizon (stale entries older than this are dropped)
_ENQUEUE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local depth = redis.call('ZCARD', KEYS[1])
if depth >= tonumber(ARGV[3]) then return -depth - 1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return depth + 1
"""


def _task_id(raw: bytes | str, unacked: bool = False) -> str | None:
    """The Celery task id (= job id) of a kombu message as the Redis transport stores it."""
    try:
        message = json.loads(raw)
        if unacked:
            message = message[0]  # [message, exchange, routing key]
        return str(message["headers"]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


class RedisJobStore:
    """:class:`~service.jobs.Jobs` over Redis, plus the worker-side transitions."""

    def __init__(
        self, url: str, *, ttl_s: float, claim_ttl_s: float, max_deliveries: int = 3,
        client: redis.Redis | None = None,
    ) -> None:
        self.ttl_s, self.claim_ttl_s, self.max_deliveries = ttl_s, claim_ttl_s, max_deliveries
        self.redis = client or redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=10,
            retry_on_timeout=True,
        )
        self._start = self.redis.register_script(_START)
        self._finish = self.redis.register_script(_FINISH)
        self._enqueue = self.redis.register_script(_ENQUEUE)
        self._callbacks: dict[str, list[tuple[Job, Callable[[Job], None]]]] = {}
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._listener: threading.Thread | None = None

    # ---- keys -------------------------------------------------------------

    @staticmethod
    def key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    def _job_keys(self, job_id: str) -> list[str]:
        return [self.key("job", job_id), self.key("queued"), self.key("running"),
                self.key("claim", job_id)]

    # ---- the API side (service.jobs.Jobs) -----------------------------------

    def create(self, model: str, family: str, task: Any, tenant: str | None = None) -> Job:
        job = Job(uuid.uuid4().hex, model, family, task, created=time.time(), tenant=tenant)
        fields = {"id": job.id, "model": model, "family": family, "status": "queued",
                  "created": repr(job.created), "tenant": tenant or "", "deliveries": 0,
                  "finishes": 0}
        ttl = int(self.claim_ttl_s)
        with self._errors():
            pipe = self.redis.pipeline()
            pipe.hset(self.key("job", job.id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(self.key("job", job.id), ttl)
            if task is not None:
                pipe.hset(self.key("claim", job.id), mapping=encode_task(task))  # type: ignore[arg-type]
                pipe.expire(self.key("claim", job.id), ttl)
            pipe.execute()
        return job

    def discard(self, job: Job) -> None:
        with self._errors():
            self.redis.delete(self.key("job", job.id), self.key("claim", job.id))
            self.redis.zrem(self.key("queued"), job.id)

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        with self._errors():
            fields: dict[bytes, bytes] = self.redis.hgetall(self.key("job", job_id))  # type: ignore[assignment]
        if not fields or (_text(fields.get(b"tenant")) or None) != tenant:
            raise not_found(job_id)
        return self._job(fields)

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        job = self.get(job_id, tenant)
        if job.status in ("succeeded", "failed"):
            raise Conflict(f"reconstruction {job_id} already {job.status}; nothing to cancel")
        if job.status != "cancelled" and not self._transition(job_id, "cancelled", {}):
            job = self.get(job_id, tenant)  # it finished meanwhile
            if job.status in ("succeeded", "failed"):
                raise Conflict(f"reconstruction {job_id} already {job.status}; nothing to cancel")
        return self.get(job_id, tenant)

    def _idem(self, tenant: str | None, key: str) -> str:
        return self.key("key", tenant or "", hashlib.sha256(key.encode()).hexdigest())

    def bind_key(self, tenant: str | None, key: str, fingerprint: str, job: Job) -> Job | None:
        name = self._idem(tenant, key)
        value = f"{fingerprint} {job.id}"
        with self._errors():
            for _ in range(3):
                if self.redis.set(name, value, nx=True, ex=int(self.claim_ttl_s)):
                    return None
                bound = _text(self.redis.get(name))  # type: ignore[arg-type]
                if bound is None:
                    continue  # expired between the two calls
                prior_fp, _, prior_id = bound.partition(" ")
                if prior_fp != fingerprint:
                    raise key_conflict(key)
                try:
                    return self.get(prior_id, tenant)
                except ServiceError:
                    self.redis.delete(name)  # its job expired: the key is free again
        raise NotReady("could not bind the Idempotency-Key; retry")

    def unbind_key(self, tenant: str | None, key: str) -> None:
        with self._errors():
            self.redis.delete(self._idem(tenant, key))

    def on_done(self, job: Job, callback: Callable[[Job], None]) -> None:
        with self._lock:
            self._callbacks.setdefault(job.id, []).append((job, callback))
        self._ensure_listener()
        if self._status(job.id) not in ("queued", "running"):
            self._fire(job.id)

    def counts(self) -> dict[str, int]:
        """Queued and running jobs (terminal ones expire in Redis and are not counted)."""
        with self._errors():
            queued, running = self.redis.zcard(self.key("queued")), self.redis.scard(
                self.key("running"))
        return dict.fromkeys(STATES, 0) | {"queued": int(queued), "running": int(running)}

    # ---- queue accounting (dispatcher) --------------------------------------

    def enqueue(self, job_id: str, max_queue: int) -> int:
        """Count the job as queued; ``-depth`` (nothing counted) when ``max_queue`` are queued."""
        now = time.time()
        with self._errors():
            depth = int(self._enqueue(keys=[self.key("queued")],
                                      args=[job_id, now, max_queue, now - self.claim_ttl_s]))
        return depth if depth > 0 else depth + 1

    def queue_depth(self) -> int:
        with self._errors():
            return int(self.redis.zcard(self.key("queued")))

    def lost(self, queue: str, older_than_s: float, limit: int = 1000) -> list[str]:
        """Jobs queued longer than ``older_than_s`` that no worker started and whose task
        message is neither waiting in ``queue`` nor unacknowledged: lost in the broker.

        (kombu's Redis transport pops a message, then records it as unacknowledged; a
        worker killed in between loses it.) A false positive, a message in flight
        between those two places, only costs a duplicate delivery: a job finishes once.
        """
        horizon = time.time() - older_than_s
        raw = self.redis.zrangebyscore(self.key("queued"), "-inf", horizon, start=0, num=limit)
        candidates = [m.decode() for m in raw]  # type: ignore[union-attr]
        if not candidates:
            return []
        present = {_task_id(m) for m in self.redis.lrange(queue, 0, -1)}
        present |= {_task_id(m, unacked=True) for m in self.redis.hvals("unacked")}
        return [c for c in candidates if c not in present and self._status(c) == "queued"]

    def heartbeat(self, worker: str, ttl_s: float) -> None:
        self.redis.set(self.key("worker", worker), repr(time.time()), px=int(ttl_s * 1000))

    def workers(self) -> list[str]:
        with self._errors():
            names = list(self.redis.scan_iter(match=self.key("worker", "*"), count=100))
        return sorted(n.decode().rsplit(":", 1)[-1] for n in names)

    # ---- the worker side -----------------------------------------------------

    def start(self, job_id: str, worker: str) -> str:
        """A delivery of ``job_id``: ``run``, ``dead`` (dead-lettered now), or why not to run."""
        dead = ServiceError(
            f"dead-lettered: delivered {self.max_deliveries} times and the worker was lost "
            "each time (a crash or an out-of-memory kill); not retried again"
        ).problem() | {"title": "Reconstruction failed",
                       "type": "urn:equirecon:problem:dead-letter"}
        keys = [*self._job_keys(job_id), self.key("dead"), self.key("done")]
        state = self._start(keys=keys, args=[
            job_id, repr(time.time()), self.max_deliveries, worker, int(self.ttl_s),
            json.dumps(dead),
        ])
        return str(state.decode() if isinstance(state, bytes) else state)

    def claim(self, job_id: str) -> Task | None:
        """The job's inputs, or None when the claim expired (or the job finished)."""
        fields: dict[bytes, bytes] = self.redis.hgetall(self.key("claim", job_id))  # type: ignore[assignment]
        return decode_task(fields) if fields else None

    def succeed(self, job_id: str, outcome: Outcome) -> bool:
        """running -> succeeded with the outcome; False if the job was already terminal."""
        fields = encode_outcome(outcome)
        return self._transition(job_id, "succeeded", {
            "result": fields.pop("meta"), **fields})

    def fail(self, job_id: str, error: ServiceError) -> bool:
        """queued/running -> failed with the problem; False if the job was already terminal."""
        return self._transition(job_id, "failed", {"error": json.dumps(error.problem())})

    def _transition(self, job_id: str, status: str, extra: dict[str, bytes | str]) -> bool:
        args: list[Any] = [job_id, status, repr(time.time()), max(int(self.ttl_s), 1)]
        for name, value in extra.items():
            args += [name, value]
        with self._errors():
            done = self._finish(keys=[*self._job_keys(job_id), self.key("done")], args=args)
        return bool(done)

    # ---- helpers --------------------------------------------------------------

    def _status(self, job_id: str) -> str | None:
        with self._errors():
            return _text(self.redis.hget(self.key("job", job_id), "status"))  # type: ignore[arg-type]

    def _job(self, f: dict[bytes, bytes]) -> Job:
        def num(name: bytes) -> float | None:
            return float(f[name]) if name in f else None

        status = _text(f[b"status"]) or "failed"
        job = Job(
            _text(f[b"id"]) or "", _text(f[b"model"]) or "", _text(f[b"family"]) or "", None,
            status=status, created=float(f[b"created"]), started=num(b"started"),
            finished=num(b"finished"), tenant=_text(f.get(b"tenant")) or None,
        )
        if status == "succeeded":
            result = {b"meta": f[b"result"], b"image": f[b"image"]}
            if b"map" in f:
                result[b"map"] = f[b"map"]
            job.result = decode_outcome(result)
        elif status == "failed":
            job.error = StoredProblem(json.loads(f.get(b"error", b"{}")))
        return job

    def _fire(self, job_id: str) -> None:
        with self._lock:
            waiting = self._callbacks.pop(job_id, [])
        for job, callback in waiting:
            callback(job)

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is None or not self._listener.is_alive():
                self._listening.set()
                self._listener = threading.Thread(
                    target=self._listen, name="equirecon-done-listener", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        """Wake waiters as jobs finish; after a lost connection, re-check every waiter."""
        while self._listening.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.key("done"))
                with self._lock:
                    pending = list(self._callbacks)
                for job_id in pending:  # finished while we were not subscribed
                    if self._status(job_id) not in ("queued", "running"):
                        self._fire(job_id)
                while self._listening.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._fire(message["data"].decode())
                pubsub.close()
            except (redis.RedisError, ServiceError, OSError):
                _log.warning("lost the Redis subscription; reconnecting")
                time.sleep(0.5)

    def close(self) -> None:
        self._listening.clear()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self.redis.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise NotReady("the job store (Redis) is unavailable; retry") from exc

