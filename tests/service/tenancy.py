"""Checks of API keys, tenant isolation and Idempotency-Key, run against either backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from service.auth import hash_key

__all__ = ["KEYS", "check_auth_and_tenants", "check_idempotency", "write_keys"]

KEYS = {"acme": "key-of-acme-0123456789", "umbrella": "key-of-umbrella-9876543210"}


def write_keys(path: Path) -> Path:
    entries = [{"tenant": t, "sha256": hash_key(k)} for t, k in KEYS.items()]
    path.write_text(json.dumps({"keys": entries}), encoding="utf-8")
    return path


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def finished(http: httpx.Client, location: str, headers: dict[str, str]) -> dict[str, Any]:
    job: dict[str, Any] = http.get(location, headers=headers).json()
    while job["status"] in ("queued", "running"):
        job = http.get(location, headers=headers, params={"poll": 1}).json()
    return job


def check_auth_and_tenants(http: httpx.Client, body: dict[str, Any]) -> None:
    """401 without or with a wrong key; another tenant's job is a 404; probes stay open."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS["acme"]}):
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/operators"),
                             ("POST", "/v1/reconstructions"), ("GET", "/v1/reconstructions/x")]:
            r = http.request(method, path, headers=headers, json=body if method == "POST" else None)
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"] == "application/problem+json"
    assert http.get("/healthz").status_code == 200
    assert http.get("/metrics").status_code == 200
    acme, umbrella = bearer("acme"), bearer("umbrella")
    assert http.get("/v1/models", headers=acme).status_code == 200
    created = http.post("/v1/reconstructions", json=body,
                        headers=acme | {"Prefer": "respond-async"})
    assert created.status_code == 202, created.text
    location = created.headers["location"]
    assert finished(http, location, acme)["status"] == "succeeded"
    for method, path in [("GET", location), ("GET", location + "/image"), ("DELETE", location)]:
        r = http.request(method, path, headers=umbrella)
        assert r.status_code == 404 and r.json()["type"].endswith("job-not-found"), r.text
    assert http.get(location + "/image", headers=acme).status_code == 200


def check_idempotency(http: httpx.Client, body: dict[str, Any]) -> None:
    """A retry with the same key gets the same job; another body with it is a 409."""
    headers = bearer("acme") | {"Idempotency-Key": "retry-me", "Prefer": "respond-async"}
    first = http.post("/v1/reconstructions", json=body, headers=headers)
    again = http.post("/v1/reconstructions", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = http.post("/v1/reconstructions", json=body | {"model": "adjoint"}, headers=headers)
    assert other.status_code == 409, other.text
    # Keys are per tenant: the same key of another tenant is another job.
    theirs = http.post("/v1/reconstructions", json=body,
                       headers=headers | bearer("umbrella"))
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert finished(http, first.headers["location"], bearer("acme"))["status"] == "succeeded"
