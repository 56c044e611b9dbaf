"""Turn request bodies into validated work, or an InvalidRequest that names the field.

Pydantic has checked the JSON shapes; this layer checks what needs the zoo or
a compiled operator: the model exists and accepts the operator, the arrays
match the operator's shapes, the equivariance group suits the image.
Cheap checks run before compiling the operator.
"""

from __future__ import annotations

import numpy as np

from service import equivariance as eq
from service.engine import ReconOptions
from service.errors import InvalidRequest
from service.operators.compile import CompiledOperator, compile_operator
from service.schemas import ReconstructionCreate, SimulateRequest
from service.worker import Task
from service.zoo import Zoo

__all__ = ["prepare_reconstruction", "prepare_simulation"]


def _require_forward(zoo: Zoo, op: CompiledOperator) -> None:
    # The forward graph simulates and scores; a zoo built without it cannot serve the family.
    if f"graphs/{op.kernel}.forward.onnx" not in zoo.files:
        raise InvalidRequest.at(
            ("body", "operator"),
            f"{op.family} operators ({op.kernel} graphs) are not available in this deployment",
        )


def prepare_simulation(body: SimulateRequest, zoo: Zoo) -> tuple[CompiledOperator, np.ndarray]:
    """The compiled operator and the image of a simulate request."""
    image = body.image.array
    want = list(body.operator.shape)
    if image.dtype != np.float32 or list(image.shape) != want:
        raise InvalidRequest.at(
            ("body", "image"),
            f"image must be float32 {want} (operator.shape), got {image.dtype.name} "
            f"{list(image.shape)}",
        )
    op = compile_operator(body.operator)  # OperatorError -> 422 at body.operator.<loc>
    _require_forward(zoo, op)
    return op, image


def prepare_reconstruction(body: ReconstructionCreate, zoo: Zoo) -> Task:
    """The worker task of a reconstruction request."""
    card = zoo.cards.get(body.model)
    if card is None:
        raise InvalidRequest.at(
            ("body", "model"), f"unknown model {body.model!r}; GET /v1/models lists them"
        )
    op = compile_operator(body.operator)  # OperatorError -> 422 at body.operator.<loc>
    try:
        card.check(op)
    except ValueError as exc:
        raise InvalidRequest.at(("body", "operator"), str(exc)) from exc
    y = body.measurements.array
    try:
        op.check_measurements(y)
    except ValueError as exc:
        raise InvalidRequest.at(("body", "measurements"), str(exc)) from exc
    _require_forward(zoo, op)

    opts = body.options.equivariance
    group: str | None = None
    transforms: tuple[eq.Transform, ...] = ()
    if opts.enabled:
        where = ("body", "options", "equivariance")
        group = opts.group or eq.default_group(op.family, op.image_shape)
        try:
            eq.elements(group, op.image_shape)
        except ValueError as exc:
            raise InvalidRequest.at((*where, "group"), str(exc)) from exc
        try:
            transforms = tuple(eq.select(group, op.image_shape, opts.transforms))
        except ValueError as exc:
            raise InvalidRequest.at((*where, "transforms"), str(exc)) from exc
    tv = body.options.tv
    options = ReconOptions(
        lam=tv.lam, max_iter=tv.max_iter, tol=tv.tol, nonneg=tv.nonneg,
        sigma=body.noise.sigma if body.noise is not None else None,
    )
    return Task(body.model, op, op.to_graph(y), options, group, transforms, opts.map)
