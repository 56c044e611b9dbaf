"""Micro-batching: a bounded queue plus one future per request (Ray Serve / Triton style).

Producers call :meth:`Batcher.submit` and get a ``concurrent.futures.Future``;
a worker thread loops on :meth:`Batcher.next_batch` then :meth:`Batcher.run`.
A batch holds requests of one key (equal model and input shapes, so they
stack), oldest first; it closes when it has ``max_batch`` requests or when the
oldest has waited ``max_wait_s``. Requests of other keys keep their place.

With ``adaptive=True`` a partial batch waits only while more requests are on
their way: producers :meth:`~Batcher.announce` a request while they prepare it
(compile its operator, check it against the model) and submit it, and the batch
closes at once when nothing is announced. A lone client then pays no fill wait
(it was 5 ms of a 10 ms pinv request over HTTP), while concurrent clients,
whose requests are being prepared while a batch runs, still fill batches.

The batch function returns one result (or exception) per request; if it
raises, each request is retried alone so a bad request fails alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import QueueFull

__all__ = ["Batcher", "Entry"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Entry(Generic[T, R]):
    """A queued request: the item, its batching key, its future, when it was queued."""

    item: T
    key: Hashable
    enqueued: float
    future: Future[R] = field(default_factory=Future)


class Batcher(Generic[T, R]):
    """Queue of items grouped into same-key batches for a worker thread."""

    def __init__(
        self,
        key: Callable[[T], Hashable],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        adaptive: bool = False,
    ) -> None:
        self._key = key
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.adaptive = adaptive
        self._clock = clock
        self._pending: list[Entry[T, R]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._announced = 0

    @contextmanager
    def announce(self) -> Iterator[None]:
        """Mark a request as on its way for the duration of the block (adaptive mode).

        Wrap the preparation and :meth:`submit` of one request, so that a partial
        batch waits for it; leaving the block (submitted or failed) ends it.
        """
        with self._cond:
            self._announced += 1
        try:
            yield
        finally:
            with self._cond:
                self._announced -= 1
                self._cond.notify_all()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; raise :class:`QueueFull` at ``max_queue`` pending requests."""
        entry: Entry[T, R] = Entry(item, self._key(item), self._clock())
        with self._cond:
            self._drop_cancelled()
            if self._closed:
                raise RuntimeError("batcher is closed")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} reconstructions are queued; retry later")
            self._pending.append(entry)
            self._cond.notify_all()
        return entry.future

    def depth(self) -> int:
        """Requests waiting (not yet taken by a worker, not cancelled)."""
        with self._cond:
            self._drop_cancelled()
            return len(self._pending)

    def next_batch(self, timeout: float | None = None) -> list[Entry[T, R]]:
        """Block for the next batch; ``[]`` after ``timeout`` seconds or on close."""
        give_up = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._drop_cancelled()
                if not self._pending:
                    if self._closed or not self._wait(give_up):
                        return []
                    continue
                head = self._pending[0]
                batch = self._same_key(head.key)
                fill_by = head.enqueued + self.max_wait_s
                more_coming = not self.adaptive or self._announced > 0
                if (
                    len(batch) < self.max_batch
                    and more_coming
                    and not self._closed
                    and self._wait(fill_by)
                ):
                    continue  # something arrived, was announced or cancelled: look again
                taken = [e for e in batch if e.future.set_running_or_notify_cancel()]
                self._pending = [e for e in self._pending if e not in batch]
                if taken:
                    return taken

    def run(
        self, batch: list[Entry[T, R]], fn: Callable[[list[T]], Sequence[R | BaseException]]
    ) -> None:
        """Resolve each future from ``fn(items)``; if ``fn`` raises, run each item alone."""
        try:
            results = list(fn([e.item for e in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} of {len(batch)}")
        except Exception as exc:
            results = [exc] if len(batch) == 1 else [self._alone(fn, e.item) for e in batch]
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)

    def close(self) -> None:
        """Stop accepting requests, cancel the queued ones, wake the worker."""
        with self._cond:
            self._closed = True
            for entry in self._pending:
                entry.future.cancel()
            self._pending.clear()
            self._cond.notify_all()

    @staticmethod
    def _alone(fn: Callable[[list[T]], Sequence[R | BaseException]], item: T) -> R | BaseException:
        try:
            (result,) = fn([item])
        except Exception as exc:
            return exc
        return result

    def _same_key(self, key: Hashable) -> list[Entry[T, R]]:
        return [e for e in self._pending if e.key == key][: self.max_batch]

    def _drop_cancelled(self) -> None:
        self._pending = [e for e in self._pending if not e.future.cancelled()]

    def _wait(self, until: float | None) -> bool:
        """Wait on the condition until ``until``; False once that time has passed."""
        if until is None:
            self._cond.wait()
            return True
        remaining = until - self._clock()
        if remaining <= 0:
            return False
        self._cond.wait(remaining)
        return True
