"""Metrics: one registry per app, gauges refreshed at scrape time."""

from __future__ import annotations

from service.jobs import JobStore
from service.metrics import Metrics


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a shared default registry would raise "Duplicated timeseries"
    a.batch(3)
    assert b"equirecon_batch_size_count 1.0" in a.render(0, {})
    assert b"equirecon_batch_size_count 0.0" in b.render(0, {})


def test_render_refreshes_gauges_and_counts_finished_jobs() -> None:
    metrics, store = Metrics(), JobStore(ttl_s=60)
    job = store.create("tv", "ct", task=None)
    store.finish(job, result=1)
    metrics.finished(job)
    text = metrics.render(5, store.counts()).decode()
    assert "equirecon_queue_depth 5.0" in text
    assert 'equirecon_jobs{state="succeeded"} 1.0' in text
    assert 'equirecon_reconstructions_total{family="ct",model="tv",status="succeeded"} 1.0' in text
