"""The operator families and their JSON schemas."""

from __future__ import annotations

import typing
from functools import lru_cache

from fastapi import APIRouter
from pydantic import BaseModel

from service.equivariance import DEFAULT_GROUP
from service.operators.spec import Operator
from service.schemas import OperatorFamily, OperatorList

__all__ = ["router"]

router = APIRouter(tags=["catalogue"])


@lru_cache(maxsize=1)
def _families() -> OperatorList:
    union = typing.get_args(Operator)[0]  # Annotated[Union[...], discriminator]
    families = []
    spec: type[BaseModel]
    for spec in typing.get_args(union):
        family = typing.get_args(spec.model_fields["type"].annotation)[0]
        families.append(OperatorFamily(
            type=family,
            description=(spec.__doc__ or "").strip(),
            default_group=DEFAULT_GROUP[family],  # type: ignore[arg-type]
            json_schema=spec.model_json_schema(),
        ))
    return OperatorList(families=families)


@router.get("/v1/operators", response_model=OperatorList)
def operators() -> OperatorList:
    """Every operator family with its JSON schema and default equivariance group."""
    return _families()
