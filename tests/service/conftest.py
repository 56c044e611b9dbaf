"""Shared fixtures: live servers over the real zoo + Engine, and over the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.engine import Engine
from service.main import create_app
from service.zoo import Zoo
from tests.service.fakes import FakeEngine, FakeZoo
from tests.service.live import LiveServer

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    """The service as shipped: real zoo, real Engine on CPU, default limits."""
    if not (ZOO / "manifest.json").exists():
        pytest.fail(f"no model zoo at {ZOO}: build it first (python -m models.export)")
    with LiveServer(create_app(Settings(model_dir=ZOO, device="cpu"))) as server:
        yield server


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    """The shipped zoo's Engine on CPU, called in-process."""
    return Engine(Zoo.load(ZOO), "cpu")


@pytest.fixture(scope="session")
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


@pytest.fixture(scope="session")
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="session")
def fake_live(fake_engine: FakeEngine) -> Iterator[LiveServer]:
    """The app over FakeEngine/FakeZoo with small limits (fault injection, queue, body size)."""
    settings = Settings(max_body_mb=0.05, max_queue=2, max_batch=4, max_wait_ms=0)
    with LiveServer(create_app(settings, zoo=FakeZoo(), engine=fake_engine)) as server:
        yield server


@pytest.fixture(scope="session")
def fake_http(fake_live: LiveServer) -> Iterator[httpx.Client]:
    with fake_live.client() as client:
        yield client


@pytest.fixture
def image() -> np.ndarray:
    """A smooth, non-symmetric 32x32 test image in [0, 1], zero outside the inscribed circle."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    x = 0.5 + 0.3 * np.sin(3 * xx + 1) * np.cos(2 * yy) + 0.1 * xx
    circle = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 <= 0.2
    return (x * circle).astype(np.float32)
