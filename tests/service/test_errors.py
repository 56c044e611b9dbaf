"""The exception tree and its one mapping to problem+json."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from types import ModuleType

import pydantic
import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import service
import service.errors as errors
from service.operators.compile import OperatorError
from service.zoo import ZooError

CLIENT_SIDE = ("service.cli", "service.client")  # their errors never reach the server


def _service_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    return [importlib.import_module(n) for n in names if n not in CLIENT_SIDE]


def _defined_exceptions(module: ModuleType) -> list[type[BaseException]]:
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == module.__name__]


LIBRARY_EXCEPTIONS = [RequestValidationError, pydantic.ValidationError, StarletteHTTPException]


def test_no_lower_layer_exception_is_left_unmapped() -> None:
    """Every exception class defined in service/ (outside the tree) or raised at us by the
    libraries must have an entry in errors.LOWER_LAYER; add one when this fails."""
    found = {c for m in _service_modules() for c in _defined_exceptions(m)} | set(
        LIBRARY_EXCEPTIONS)
    unmapped = sorted(
        c.__qualname__ for c in found
        if not issubclass(c, errors.ServiceError)
        and not any(issubclass(c, mapped) for mapped in errors.LOWER_LAYER)
    )
    assert unmapped == []
    assert {OperatorError, ZooError} <= found  # the discovery itself works


def test_every_error_class_has_its_own_status_and_slug() -> None:
    tree = [c for c in _defined_exceptions(errors) if issubclass(c, errors.ServiceError)]
    assert len(tree) >= 13
    slugs = [c.slug for c in tree]
    assert len(set(slugs)) == len(slugs)
    assert all(400 <= c.status < 600 for c in tree)


def test_problem_body() -> None:
    error = errors.InvalidRequest.at(("body", "operator", "shape"), "must be square")
    assert error.problem() == {
        "type": "urn:equirecon:problem:invalid-request",
        "title": "Invalid request",
        "status": 422,
        "detail": "body.operator.shape: must be square",
        "errors": [{"loc": ["body", "operator", "shape"], "msg": "must be square"}],
    }


def test_operator_errors_are_located_under_the_operator() -> None:
    mapped = errors.to_service_error(OperatorError(("kernel", "gaussian", "size"), "must be odd"))
    assert mapped.status == 422
    assert mapped.errors[0].loc == ("body", "operator", "kernel", "gaussian", "size")


def test_pydantic_and_request_validation_errors() -> None:
    class M(pydantic.BaseModel):
        n: int

    with pytest.raises(pydantic.ValidationError) as info:
        M.model_validate({"n": "x"})
    mapped = errors.to_service_error(info.value)
    assert (mapped.status, mapped.errors[0].loc) == (422, ("n",))
    bad_json = RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error",
          "ctx": {"error": "Expecting value"}}])
    assert errors.to_service_error(bad_json).status == 400


@pytest.mark.parametrize(("status", "cls"), [(404, errors.NotFound), (405, errors.MethodNotAllowed),
                                             (413, errors.PayloadTooLarge)])
def test_http_exceptions_keep_their_status(status: int, cls: type) -> None:
    mapped = errors.to_service_error(StarletteHTTPException(status))
    assert isinstance(mapped, cls) and mapped.status == status
    odd = errors.to_service_error(StarletteHTTPException(418))
    assert odd.status == 418 and odd.problem()["status"] == 418


def test_unknown_exceptions_are_opaque_500s(caplog: pytest.LogCaptureFixture) -> None:
    response = errors.problem_response(KeyError("secret-internal-name"))
    body = json.loads(bytes(response.body))
    assert response.status_code == 500 and response.media_type == errors.PROBLEM_MEDIA_TYPE
    assert "secret" not in json.dumps(body) and body["status"] == 500
    assert "secret-internal-name" in caplog.text  # logged for the operator, not sent


def test_queue_full_sets_retry_after() -> None:
    response = errors.problem_response(errors.QueueFull("full", retry_after_s=3))
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
