"""API keys, tenants and Idempotency-Key on the in-process backend (fake engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.auth import KeyRing, hash_key
from service.config import Settings
from service.errors import Unauthorized
from service.main import create_app
from tests.service.api.test_problems import recon
from tests.service.fakes import FakeEngine, FakeZoo
from tests.service.live import LiveServer
from tests.service.tenancy import check_auth_and_tenants, check_idempotency, write_keys


@pytest.fixture(scope="module")
def keyed_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    keys = write_keys(tmp_path_factory.mktemp("keys") / "keys.json")
    app = create_app(Settings(api_keys_file=keys, max_wait_ms=0), zoo=FakeZoo(),
                     engine=FakeEngine())
    with LiveServer(app) as server, server.client() as client:
        yield client


def test_keys_and_tenant_isolation(keyed_http: httpx.Client) -> None:
    check_auth_and_tenants(keyed_http, recon(model="tv"))


def test_idempotency_key(keyed_http: httpx.Client) -> None:
    check_idempotency(keyed_http, recon(model="tv"))


def test_prefer_wait_bounds_the_synchronous_wait(fake_http: httpx.Client) -> None:
    done = fake_http.post("/v1/reconstructions", json=recon(), headers={"Prefer": "wait=30"})
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    at_once = fake_http.post("/v1/reconstructions", json=recon(), headers={"Prefer": "wait=0"})
    assert at_once.status_code in (200, 202)  # 202 unless it finished in no time at all


def test_keys_file_is_stored_hashed(tmp_path: Path) -> None:
    ring = KeyRing.load(write_keys(tmp_path / "keys.json"))
    text = (tmp_path / "keys.json").read_text(encoding="utf-8")
    assert "key-of-acme" not in text and hash_key("key-of-acme-0123456789") in text
    assert ring.tenant("Bearer key-of-acme-0123456789") == "acme"
    assert ring.tenant("bearer  key-of-umbrella-9876543210 ") == "umbrella"
    for header in (None, "", "Basic x", "Bearer", "Bearer nope"):
        with pytest.raises(Unauthorized):
            ring.tenant(header)


@pytest.mark.parametrize("content", ['{"keys": []}', '{"keys": [{"tenant": "a"}]}', "[]"])
def test_a_malformed_keys_file_refuses_to_start(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="keys"):
        create_app(Settings(api_keys_file=path))
