"""The service's one exception tree and its single mapping to ``application/problem+json``.

Every error a client can see is a :class:`ServiceError`; it renders as an RFC
9457 problem ``{type, title, status, detail}`` plus ``errors: [{loc, msg}]``
naming the offending fields of a validation error. Exceptions of lower layers
(pydantic, FastAPI/Starlette, the operator compiler, the zoo) are mapped to
this tree in one table, :data:`LOWER_LAYER`; anything else becomes a 500 that
is logged with its traceback and never leaks it.

Tree::

    ServiceError (500 internal)
    ├── MalformedRequest (400)      body is not JSON
    ├── Unauthorized (401)          API key missing or wrong (with WWW-Authenticate)
    ├── NotFound (404)              route, ModelNotFound, JobNotFound
    ├── MethodNotAllowed (405)
    ├── NotAcceptable (406)         image format not available
    ├── Conflict (409)              job not finished / already finished
    ├── PayloadTooLarge (413)       body over EQUIRECON_MAX_BODY_MB
    ├── InvalidRequest (422)        field errors: pydantic, operator, shapes, options
    ├── QueueFull (429)             with Retry-After
    ├── NotReady (503)              models or workers not up
    └── ReconstructionFailed (500)  a worker failed on a valid request
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pydantic
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.operators.compile import OperatorError
from service.schemas import Problem
from service.zoo import ZooError

__all__ = [
    "LOWER_LAYER",
    "PROBLEM_MEDIA_TYPE",
    "Conflict",
    "FieldError",
    "InvalidRequest",
    "JobNotFound",
    "MalformedRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotAcceptable",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "QueueFull",
    "ReconstructionFailed",
    "ServiceError",
    "StoredProblem",
    "Unauthorized",
    "documented",
    "problem_response",
    "to_service_error",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_log = logging.getLogger("equirecon")

Loc = tuple[str | int, ...]


class FieldError:
    """One field of a validation error: where (``loc``) and why (``msg``)."""

    __slots__ = ("loc", "msg")

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        self.loc: Loc = tuple(loc)
        self.msg = msg

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}


class ServiceError(Exception):
    """Base of every client-visible error; ``status`` and ``title`` come from the class."""

    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return f"urn:equirecon:problem:{self.slug}"

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body


class MalformedRequest(ServiceError):
    """The body is not valid JSON."""

    status, title, slug = 400, "Malformed request", "malformed-request"


class Unauthorized(ServiceError):
    """No API key, or one that is not configured (``EQUIRECON_API_KEYS_FILE``)."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="equirecon"'})


class NotFound(ServiceError):
    """No such resource."""

    status, title, slug = 404, "Not found", "not-found"


class ModelNotFound(NotFound):
    """``/v1/models/{id}`` names no model of the zoo."""

    title, slug = "Model not found", "model-not-found"


class JobNotFound(NotFound):
    """No reconstruction job with this id (never existed or expired)."""

    title, slug = "Reconstruction not found", "job-not-found"


class MethodNotAllowed(ServiceError):
    status, title, slug = 405, "Method not allowed", "method-not-allowed"


class NotAcceptable(ServiceError):
    """The requested representation (image format) is not available."""

    status, title, slug = 406, "Format not available", "not-acceptable"


class Conflict(ServiceError):
    """The job is not in a state that allows this (no image yet, already finished)."""

    status, title, slug = 409, "Conflict with the job state", "conflict"


class PayloadTooLarge(ServiceError):
    status, title, slug = 413, "Request body too large", "payload-too-large"


class InvalidRequest(ServiceError):
    """The request is well-formed JSON but some fields are invalid (see ``errors``)."""

    status, title, slug = 422, "Invalid request", "invalid-request"

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str) -> InvalidRequest:
        """One invalid field: ``InvalidRequest.at(("body", "model"), "unknown model")``."""
        return cls(f"{_loc_text(loc)}: {msg}", errors=[FieldError(loc, msg)])


class QueueFull(ServiceError):
    """The reconstruction queue is at EQUIRECON_MAX_QUEUE; retry later."""

    status, title, slug = 429, "Too many queued reconstructions", "queue-full"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status, title, slug = 503, "Service not ready", "not-ready"


class ReconstructionFailed(ServiceError):
    """A worker failed on a request that passed validation (details are logged)."""

    status, title, slug = 500, "Reconstruction failed", "reconstruction-failed"


class StoredProblem(ServiceError):
    """A problem recorded by a remote worker, shown again from its stored problem+json."""

    slug = "stored"

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "")))
        self.status = int(problem.get("status", 500))
        self.title = str(problem.get("title", ServiceError.title))
        self._type = str(problem.get("type", "urn:equirecon:problem:internal"))
        self.errors = [FieldError(e["loc"], e["msg"]) for e in problem.get("errors") or []]

    @property
    def type(self) -> str:
        return self._type


def _loc_text(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _from_pydantic(errors: Sequence[Any], prefix: Loc = ()) -> InvalidRequest:
    fields = [FieldError((*prefix, *e["loc"]), str(e["msg"])) for e in errors]
    detail = "; ".join(f"{_loc_text(f.loc)}: {f.msg}" for f in fields[:5])
    return InvalidRequest(detail or "invalid request", errors=fields)


def _request_validation(exc: RequestValidationError) -> ServiceError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx") or {}
        return MalformedRequest(f"body is not valid JSON: {ctx.get('error', 'decode error')}")
    return _from_pydantic(errors)


def _http_exception(exc: StarletteHTTPException) -> ServiceError:
    by_status: dict[int, type[ServiceError]] = {
        404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge, 400: MalformedRequest
    }
    error = by_status.get(exc.status_code, ServiceError)(
        str(exc.detail), headers=dict(exc.headers or {})
    )
    if error.status != exc.status_code:  # a status Starlette raises that has no class here
        error.status, error.title, error.slug = exc.status_code, "HTTP error", "http"
    return error


#: Lower-layer exception type -> its mapping into the tree (checked by a test
#: that enumerates the exception classes of the layers below the API).
LOWER_LAYER: dict[type[Exception], Callable[[Any], ServiceError]] = {
    RequestValidationError: _request_validation,
    pydantic.ValidationError: lambda exc: _from_pydantic(exc.errors()),
    OperatorError: lambda exc: InvalidRequest.at(("body", "operator", *exc.loc), exc.message),
    StarletteHTTPException: _http_exception,
    # Startup refuses a bad zoo; at request time a ZooError is a deployment gap.
    ZooError: lambda exc: ServiceError(f"model zoo error: {exc}"),
}


def to_service_error(exc: BaseException, fallback: ServiceError | None = None) -> ServiceError:
    """Map any exception into the tree; unknown ones become ``fallback`` or a logged, opaque 500."""
    if isinstance(exc, ServiceError):
        return exc
    for cls in type(exc).__mro__:
        mapper = LOWER_LAYER.get(cls)
        if mapper is not None:
            return mapper(exc)
    if fallback is not None:
        return fallback
    _log.error("unhandled error", exc_info=exc)
    return ServiceError("an internal error occurred; it has been logged")


def problem_response(exc: BaseException) -> JSONResponse:
    """The problem+json response for any exception (the one place errors are rendered)."""
    error = to_service_error(exc)
    return JSONResponse(
        error.problem(), status_code=error.status, headers=error.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


_DESCRIPTIONS = {
    400: "Malformed JSON body",
    401: "API key missing or not valid (`Authorization: Bearer <key>`)",
    404: "Not found",
    406: "Requested format not available",
    409: "Conflict with the job state",
    413: "Request body over EQUIRECON_MAX_BODY_MB",
    422: "Invalid field(s); `errors` names each one",
    429: "Queue full; retry after `Retry-After` seconds",
    500: "The reconstruction failed (details are in the service log)",
    503: "Models or workers not ready",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the listed error statuses (problem+json)."""
    return {s: {"model": Problem, "description": _DESCRIPTIONS[s]} for s in statuses}
