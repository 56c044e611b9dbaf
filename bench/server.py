"""Serve the API with explicit settings (benchmark helper).

``Settings(**json)`` then ``create_app(settings)`` under uvicorn: the same app
``equirecon serve`` runs, with knobs (``max_batch``, ``max_wait_ms``, ...)
set by the benchmark instead of the environment.

    python -m bench.server --settings '{"max_batch": 1}' --port 8001
"""

from __future__ import annotations

import argparse
import json

import uvicorn

from service.config import Settings
from service.main import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="{}", help="JSON object of Settings fields")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = Settings(**json.loads(args.settings))
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
