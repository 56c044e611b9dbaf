"""Prometheus metrics, one registry per app (so two apps in one process never collide)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.jobs import Job

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Counters and histograms of the service; gauges are refreshed at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "equirecon_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "equirecon_http_request_duration_seconds", "HTTP latency", ["route", "method"],
            registry=r,
        )
        self.reconstructions = Counter(
            "equirecon_reconstructions", "Finished reconstructions",
            ["model", "family", "status"], registry=r,
        )
        self.batch_size = Histogram(
            "equirecon_batch_size", "Requests per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.queue_depth = Gauge("equirecon_queue_depth", "Queued reconstructions", registry=r)
        self.jobs = Gauge("equirecon_jobs", "Jobs held, by state", ["state"], registry=r)

    def finished(self, job: Job) -> None:
        self.reconstructions.labels(job.model, job.family, job.status).inc()

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def render(self, queue_depth: int, job_counts: dict[str, int]) -> bytes:
        """The text exposition, after refreshing the gauges."""
        self.queue_depth.set(queue_depth)
        for state, count in job_counts.items():
            self.jobs.labels(state).set(count)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count requests and time them by route template (not raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - start)
