"""Every service module declares ``__all__``, and each name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import service

MODULES = sorted(m.name for m in pkgutil.walk_packages(service.__path__, "service."))
OWN_PACKAGES = {"service.api", "service.api.routes", "service.operators"}  # docstring-only


@pytest.mark.parametrize("name", [m for m in MODULES if m not in OWN_PACKAGES])
def test_all_is_declared_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert [n for n in exported if not hasattr(module, n)] == []
