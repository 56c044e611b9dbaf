"""The micro-batcher: full batches, same-key grouping, failure isolation, bounded queue."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from service.batcher import Batcher
from service.errors import QueueFull


class Clock:
    """A manual clock: the batch wait is over when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(max_batch: int = 4, max_wait_s: float = 60.0, max_queue: int = 100,
         clock: Clock | None = None, adaptive: bool = False) -> Batcher[tuple[str, int], int]:
    return Batcher(lambda item: item[0], max_batch=max_batch, max_wait_s=max_wait_s,
                   max_queue=max_queue, clock=clock or Clock(), adaptive=adaptive)


def items(batch: Sequence) -> list:
    return [e.item for e in batch]


def test_fills_a_batch_exactly_with_a_long_wait() -> None:
    b = make(max_batch=4, max_wait_s=3600.0)
    for i in range(4):
        b.submit(("a", i))
    # Full: returned without waiting for the hour.
    assert items(b.next_batch()) == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    assert b.depth() == 0


def test_a_batch_holds_one_key_and_others_keep_their_place() -> None:
    clock = Clock()
    b = make(max_batch=3, clock=clock)
    for item in [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 1)]:
        b.submit(item)
    assert items(b.next_batch()) == [("a", 0), ("a", 1), ("a", 2)]
    clock.now = 61.0  # the oldest left has waited max_wait_s: partial batches go
    assert items(b.next_batch()) == [("b", 0), ("b", 1)]
    assert items(b.next_batch()) == [("a", 3)]
    assert b.next_batch(timeout=0) == []


def test_a_partial_batch_waits_for_its_deadline_only() -> None:
    clock = Clock()
    b = make(max_batch=8, clock=clock)
    b.submit(("a", 0))
    clock.now = 60.0
    assert items(b.next_batch()) == [("a", 0)]


def test_adaptive_a_lone_request_goes_at_once() -> None:
    # The manual clock never reaches the hour: only the empty announcement lets it go.
    b = make(max_batch=8, max_wait_s=3600.0, adaptive=True)
    b.submit(("a", 0))
    assert items(b.next_batch()) == [("a", 0)]


def test_adaptive_a_partial_batch_waits_for_announced_requests() -> None:
    b = make(max_batch=8, max_wait_s=3600.0, adaptive=True)
    arriving = b.announce()
    arriving.__enter__()
    with b.announce():
        b.submit(("a", 0))
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(b.next_batch()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()  # ("a", 1) is announced: the batch waits for it
    b.submit(("a", 1))
    arriving.__exit__(None, None, None)
    worker.join(5)
    assert items(got) == [("a", 0), ("a", 1)]


def test_adaptive_a_failed_announcement_releases_the_batch() -> None:
    b = make(max_batch=8, max_wait_s=3600.0, adaptive=True)
    b.submit(("a", 0))
    got: list = []
    with pytest.raises(ValueError), b.announce():
        worker = threading.Thread(target=lambda: got.extend(b.next_batch()))
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()
        raise ValueError("the announced request was invalid")
    worker.join(5)
    assert items(got) == [("a", 0)]


def test_one_bad_request_fails_alone() -> None:
    b = make(max_batch=3)
    futures = [b.submit(("a", i)) for i in (1, -1, 2)]
    calls = []

    def square_positive(batch: list[tuple[str, int]]) -> list[int]:
        calls.append(len(batch))
        if any(v < 0 for _, v in batch):
            raise ValueError("negative")
        return [v * v for _, v in batch]

    b.run(b.next_batch(), square_positive)
    assert calls == [3, 1, 1, 1]  # the batch, then each alone
    assert futures[0].result() == 1 and futures[2].result() == 4
    with pytest.raises(ValueError, match="negative"):
        futures[1].result()


def test_per_item_exceptions_attach_to_their_request() -> None:
    b = make(max_batch=2)
    good, bad = b.submit(("a", 1)), b.submit(("a", 2))
    b.run(b.next_batch(), lambda batch: [10, KeyError("second")])
    assert good.result() == 10
    assert isinstance(bad.exception(), KeyError)


def test_a_wrong_result_count_fails_every_request_alone() -> None:
    b = make(max_batch=2)
    futures = [b.submit(("a", 1)), b.submit(("a", 2))]
    b.run(b.next_batch(), lambda batch: [])
    assert all(isinstance(f.exception(), ValueError) for f in futures)


def test_queue_full_is_429_with_retry_after() -> None:
    b = make(max_queue=2)
    b.submit(("a", 0))
    b.submit(("b", 0))
    with pytest.raises(QueueFull) as info:
        b.submit(("a", 1))
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "1"


def test_cancelled_requests_are_skipped_and_free_their_slot() -> None:
    b = make(max_batch=2, max_queue=2)
    first, _ = b.submit(("a", 0)), b.submit(("a", 1))
    assert first.cancel()
    assert b.depth() == 1
    b.submit(("a", 2))  # the cancelled one no longer counts against max_queue
    assert items(b.next_batch()) == [("a", 1), ("a", 2)]


def test_close_cancels_the_queue_and_wakes_the_worker() -> None:
    b = make()
    future = b.submit(("a", 0))
    b.close()
    assert future.cancelled() and b.next_batch() == []
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(("a", 1))


def test_concurrent_producers_every_request_answered_once() -> None:
    b = make(max_batch=5, max_wait_s=0.001, max_queue=150)  # never full, even if starved
    seen: list[list[tuple[str, int]]] = []

    def work() -> None:
        while batch := b.next_batch(timeout=1.0):
            seen.append(items(batch))
            b.run(batch, lambda xs: [v for _, v in xs])

    worker = threading.Thread(target=work)
    worker.start()
    futures = {}

    def produce(key: str) -> None:
        for i in range(50):
            futures[(key, i)] = b.submit((key, i))

    producers = [threading.Thread(target=produce, args=(k,)) for k in "xyz"]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    assert all(f.result(timeout=10) == i for (_, i), f in futures.items())
    b.close()
    worker.join()
    assert sorted(i for batch in seen for i in batch) == sorted(futures)
    assert all(len(batch) <= 5 and len({k for k, _ in batch}) == 1 for batch in seen)
