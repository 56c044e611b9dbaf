"""The model cards of the zoo."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ZooDep
from service.errors import ModelNotFound, documented
from service.schemas import ModelList, ModelSummary

__all__ = ["router"]

router = APIRouter(tags=["catalogue"])


@router.get("/v1/models", response_model=ModelList, responses=documented(503))
def models(zoo: ZooDep) -> ModelList:
    """Every model of the zoo: id, kind, accepted operator families."""
    return ModelList(models=[
        ModelSummary(id=c.id, kind=c.kind, title=c.title, description=c.description,
                     families=list(c.families))
        for c in zoo.cards.values()
    ])


@router.get("/v1/models/{model_id}", response_model=dict[str, Any], responses=documented(404, 503))
def model_card(model_id: str, zoo: ZooDep) -> dict[str, Any]:
    """The whole model card (constraints, group, metrics, sha256)."""
    card = zoo.cards.get(model_id)
    if card is None:
        raise ModelNotFound(f"no model {model_id!r}; GET /v1/models lists them")
    return card.raw
