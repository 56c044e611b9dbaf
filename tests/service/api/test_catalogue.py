"""Health, readiness, operators and model cards (real zoo)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.config import Settings
from service.equivariance import DEFAULT_GROUP
from service.main import create_app

FAMILIES = ["denoising", "inpainting", "blur", "superresolution", "compressed_sensing", "mri",
            "mri_multicoil", "ct"]


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}


def test_not_ready_until_the_lifespan_has_loaded_everything() -> None:
    app = create_app(Settings())  # lifespan not run: nothing loaded

    async def probe() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get(p) for p in ("/healthz", "/readyz", "/v1/models")]

    health, ready, models = asyncio.run(probe())
    assert health.status_code == 200
    assert ready.status_code == models.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"


def test_operator_families_with_schemas_and_groups(http: httpx.Client) -> None:
    families = http.get("/v1/operators").json()["families"]
    assert [f["type"] for f in families] == FAMILIES
    for family in families:
        assert family["default_group"] == DEFAULT_GROUP[family["type"]]
        schema = family["json_schema"]
        assert schema["properties"]["type"]["const"] == family["type"]
        assert {"type", "shape"} <= set(schema["required"])
        assert family["description"]


def test_models_and_cards(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["models"]}
    assert {"adjoint", "pinv", "tv"} <= set(models)
    assert models["tv"]["kind"] == "tv" and "ct" in models["tv"]["families"]
    card = http.get("/v1/models/tv").json()
    assert card["id"] == "tv" and card["options"]["max_iter"] == 300
    assert all(len(digest) == 64 for digest in card["sha256"].values())


@pytest.mark.parametrize("model_id", ["nope", "TV", "tv.json"])
def test_unknown_model_card_is_404(http: httpx.Client, model_id: str) -> None:
    response = http.get(f"/v1/models/{model_id}")
    assert response.status_code == 404 and model_id in response.json()["detail"]
