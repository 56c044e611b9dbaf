"""Dispatch backends: how validated jobs reach a worker (in-process now, Celery later)."""

from service.dispatch.base import Dispatcher

__all__ = ["Dispatcher"]
