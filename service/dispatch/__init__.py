"""Dispatch backends: how validated jobs reach a worker (in-process, or Celery over Redis)."""

from service.dispatch.base import Dispatcher

__all__ = ["Dispatcher"]
