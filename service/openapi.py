"""The OpenAPI document: error responses as problem+json, and the committed openapi.yaml.

Regenerate the committed file with ``python -m service.openapi`` (a test fails
on drift). Needs pyyaml (a dev dependency), imported only here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["OPENAPI_PATH", "main", "problem_openapi", "render"]

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
PROBLEM = "application/problem+json"


def problem_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` document every 4xx/5xx body as ``application/problem+json``."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
            for path in schema["paths"].values():
                for operation in path.values():
                    if "security" in operation:
                        # The key is required only where EQUIRECON_API_KEYS_FILE is set.
                        operation["security"].append({})
                    for status, response in operation.get("responses", {}).items():
                        if status[0] in "45":  # FastAPI's own 422 model included
                            response["content"] = {PROBLEM: problem}
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def render() -> str:
    """openapi.yaml as text, generated from a fresh app (nothing is loaded)."""
    import yaml

    from service.config import Settings
    from service.main import create_app

    schema = create_app(Settings()).openapi()
    return yaml.safe_dump(schema, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    """Write openapi.yaml at the repository root."""
    OPENAPI_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {OPENAPI_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
