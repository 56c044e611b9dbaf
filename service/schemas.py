"""Request and response bodies of the REST API (DESIGN.md §5), split by direction.

``*Request``/``*Create`` models are what a client sends (strict: unknown
fields are refused); ``*Public`` and the other response models are what the
service answers. Operator specs and wire arrays come from
``service.operators.spec`` and ``service.wire``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.operators.spec import NoiseSpec, Operator
from service.wire import ArrayModel, encode_array

__all__ = [
    "GROUPS",
    "EquivarianceOptions",
    "EquivarianceScore",
    "FieldErrorOut",
    "Health",
    "JobStatus",
    "ModelList",
    "ModelSummary",
    "OperatorFamily",
    "OperatorList",
    "Problem",
    "ReconstructionCreate",
    "ReconstructionOptions",
    "ReconstructionPublic",
    "SimulateRequest",
    "SimulateResponse",
    "TVOptions",
    "Timings",
]

#: Transform groups of the equivariance score (``service.equivariance``).
GROUPS = ("rot90", "flips", "D4", "shifts")
Group = Literal["rot90", "flips", "D4", "shifts"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors ---------------------------------------------------------------


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(description="path of the field: ['body', 'operator', 'shape']")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (served as application/problem+json)."""

    type: str = Field(examples=["urn:equirecon:problem:invalid-request"])
    title: str
    status: int
    detail: str
    errors: list[FieldErrorOut] | None = Field(
        default=None, description="validation errors only: one entry per invalid field"
    )


# ---- health, catalogue ----------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "ready"]


class OperatorFamily(BaseModel):
    type: str = Field(description="the operator spec's `type`")
    description: str
    default_group: Group = Field(description="equivariance group used when a request names none")
    json_schema: dict[str, Any] = Field(description="JSON schema of the operator spec")


class OperatorList(BaseModel):
    families: list[OperatorFamily]


class ModelSummary(BaseModel):
    id: str
    kind: str = Field(description="adjoint | pinv | tv | a learned kind")
    title: str
    description: str
    families: list[str] = Field(description="operator families the model accepts")


class ModelList(BaseModel):
    models: list[ModelSummary]


# ---- simulate -------------------------------------------------------------


class SimulateRequest(_Request):
    operator: Operator
    image: ArrayModel = Field(description="float32 [H, W] equal to operator.shape")
    noise: NoiseSpec | None = None


class SimulateResponse(BaseModel):
    measurements: ArrayModel


# ---- reconstructions ------------------------------------------------------


class EquivarianceOptions(_Request):
    """How to score: ``{"enabled": false}`` switches the score off."""

    # Strict: `"map": 0` or `"transforms": "3"` are refused, as the schema says.
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    group: Group | None = Field(
        default=None,
        description="null: the family's default (D4 falls back to flips for non-square images)",
    )
    transforms: int | None = Field(
        default=None, ge=1, le=16,
        description="how many group elements to use: null = all (finite groups) or 4 (shifts)",
    )
    map: bool = Field(default=False, description="also return the per-pixel error map")


class TVOptions(_Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    lam: float | None = Field(
        default=None, alias="lambda", ge=0.0, le=1e3,
        description="TV weight; null = chosen from noise.sigma",
    )
    max_iter: int = Field(default=300, ge=1, le=5000)
    tol: float = Field(default=1e-4, gt=0.0, le=1.0)
    nonneg: bool = True


class ReconstructionOptions(_Request):
    equivariance: EquivarianceOptions = Field(default_factory=EquivarianceOptions)
    tv: TVOptions = Field(default_factory=TVOptions)


_EXAMPLE_Y = encode_array(np.full((8, 8), 0.5, dtype=np.float32))


class ReconstructionCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "tv",
                    "operator": {"type": "denoising", "shape": [8, 8]},
                    "measurements": _EXAMPLE_Y,
                    "noise": {"sigma": 0.05},
                    "options": {"equivariance": {"group": "D4", "transforms": 3}},
                }
            ]
        },
    )

    model: str = Field(min_length=1, max_length=128, description="a model id of GET /v1/models")
    operator: Operator
    measurements: ArrayModel
    noise: NoiseSpec | None = Field(default=None, description="noise level of the measurements")
    options: ReconstructionOptions = Field(default_factory=ReconstructionOptions)


class EquivarianceScore(BaseModel):
    score: float = Field(description="mean_g ‖x̃_g - T_g x̂‖² / ‖T_g x̂‖²")
    score_db: float = Field(description="-10 log10(score), capped at 120")
    group: Group
    transforms: int
    map: ArrayModel | None = Field(default=None, description="RMS_g of T_g⁻¹ x̃_g - x̂ [H, W]")


class Timings(BaseModel):
    queue_ms: float
    compute_ms: float


class ReconstructionPublic(BaseModel):
    id: str
    status: JobStatus
    model: str
    family: str
    image: ArrayModel | None = Field(default=None, description="float32 [H, W] when succeeded")
    equivariance: EquivarianceScore | None = None
    data_consistency: float | None = Field(default=None, description="‖A x̂ - y‖ / ‖y‖")
    iterations: int | None = None
    timings: Timings | None = None
    error: Problem | None = Field(default=None, description="why the job failed")
