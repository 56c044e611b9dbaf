"""The ``equirecon`` command: serve the API, or talk to a running server.

    equirecon serve [--host 127.0.0.1] [--port 8000]
    equirecon worker [--name NAME] [--pool threads|solo] [--concurrency N]   (EQUIRECON_BROKER_URL)
    equirecon worker-health [--name NAME]   exit 0 while that worker beats in Redis
    equirecon hash-key [--tenant NAME]      a new API key and its keys-file entry
    equirecon models
    equirecon simulate --operator JSON|@file --image x.npy|x.png --out y.npy [--noise-sigma 0.01]
    equirecon submit --model tv --operator JSON|@file --measurements y.npy --out x.npy
    equirecon train RECIPE [...]       = python -m models.train (build extra: torch)
    equirecon export RECIPE [...]      = python -m models.export_learned (build extra: torch)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _operator(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"operator is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("operator must be a JSON object")
    return value


class InputFileError(Exception):
    """An input file the command cannot read (missing, empty, not .npy/.png, pickled)."""


def _load_array(path: Path) -> np.ndarray:
    """A ``.png`` as grey values in [0, 1], else a ``.npy`` array (never a pickle)."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise InputFileError(f"cannot read {path}: {exc or type(exc).__name__}") from exc


def _noise(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.noise_sigma is None:
        return None
    return {"sigma": args.noise_sigma, "seed": args.noise_seed}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.config import Settings
    from service.main import create_app

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"equirecon: refusing to start: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from service.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"equirecon: refusing to start: {exc}", file=sys.stderr)
        return 2
    if settings.broker_url is None:
        print("equirecon: a worker needs EQUIRECON_BROKER_URL=redis://...", file=sys.stderr)
        return 2
    from service.dispatch.celery import run_worker

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    run_worker(settings, name=args.name, pool=args.pool, concurrency=args.concurrency,
               loglevel=args.log_level.upper())
    return 0


def _worker_health(args: argparse.Namespace) -> int:
    from service.config import Settings
    from service.dispatch.celery import worker_name
    from service.dispatch.store import RedisJobStore

    settings = Settings()
    if settings.broker_url is None:
        return 1
    store = RedisJobStore(settings.broker_url, ttl_s=1.0, claim_ttl_s=1.0)
    try:
        return 0 if worker_name(settings, args.name) in store.workers() else 1
    except Exception:
        return 1
    finally:
        store.close()


def _hash_key(args: argparse.Namespace) -> int:
    from service.auth import hash_key, new_key

    key = new_key()
    print(f"key (give it to the client, store it nowhere else): {key}")
    print(json.dumps({"tenant": args.tenant, "sha256": hash_key(key)}))
    return 0


def _models(args: argparse.Namespace) -> int:
    from service.client import EquiReconClient

    with EquiReconClient(args.url, args.timeout) as client:
        for card in client.models():
            print(f"{card['id']:<16} {card['kind']:<10} {', '.join(card['families'])}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from service.client import EquiReconClient

    with EquiReconClient(args.url, args.timeout) as client:
        image = _load_array(args.image).astype(np.float32)
        y = client.simulate(args.operator, image, _noise(args))
    np.save(args.out, y, allow_pickle=False)
    print(f"wrote {args.out}: {y.dtype} {list(y.shape)}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from service.client import EquiReconClient

    options: dict[str, Any] = {}
    if args.group is not None or args.transforms is not None:
        options["equivariance"] = {"group": args.group, "transforms": args.transforms}
    y = _load_array(args.measurements)
    with EquiReconClient(args.url, args.timeout) as client:
        result = client.reconstruct(
            args.model, args.operator, y, noise=_noise(args), options=options or None
        )
    if result.image is None:
        print(f"reconstruction {result.id} {result.status}: {result.error}", file=sys.stderr)
        return 1
    np.save(args.out, result.image, allow_pickle=False)
    print(f"wrote {args.out}: {list(result.image.shape)}; iterations {result.iterations}; "
          f"data consistency {result.data_consistency:.4g}")
    if result.score is not None:
        print(f"equivariance score {result.score:.4g} ({result.score_db:.2f} dB; "
              f"group {result.group}, {result.transforms} transforms)")
    return 0


#: Build-time commands (models/, torch): their own argument parsers take the rest.
_BUILD_COMMANDS = {
    "train": ("models.train.__main__", "train a recipe into runs/ (python -m models.train)"),
    "export": ("models.export_learned", "export a trained recipe's graph and card to the zoo"),
}


def _build_command(name: str, argv: list[str]) -> int:
    import importlib

    module_name = _BUILD_COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # the runtime install has no torch
        print(f"equirecon {name} needs the build extra ({exc.name} is missing): "
              "pip install -e '.[build]'", file=sys.stderr)
        return 2
    module.main(argv)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equirecon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    worker = sub.add_parser("worker", help="run a Celery worker (one per GPU)")
    worker.add_argument("--name", help="worker name (default from the host and GPU)")
    worker.add_argument("--pool", choices=["threads", "solo"], default="threads")
    worker.add_argument("--concurrency", type=int, help="task threads (default MAX_BATCH)")
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(run=_worker)

    health = sub.add_parser("worker-health", help="exit 0 while the worker beats in Redis")
    health.add_argument("--name", help="worker name (default as for `worker`)")
    health.set_defaults(run=_worker_health)

    hashk = sub.add_parser("hash-key", help="print a new API key and its keys-file entry")
    hashk.add_argument("--tenant", default="default")
    hashk.set_defaults(run=_hash_key)

    def remote(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds")
        return p

    remote("models", "list the served models").set_defaults(run=_models)

    simulate = remote("simulate", "simulate measurements of an image")
    simulate.add_argument("--operator", type=_operator, required=True, help="JSON or @file")
    simulate.add_argument("--image", type=Path, required=True, help=".npy or .png")
    simulate.add_argument("--out", type=Path, required=True, help=".npy to write")
    simulate.set_defaults(run=_simulate)

    submit = remote("submit", "reconstruct measurements and print the score")
    submit.add_argument("--model", required=True)
    submit.add_argument("--operator", type=_operator, required=True, help="JSON or @file")
    submit.add_argument("--measurements", type=Path, required=True, help=".npy")
    submit.add_argument("--out", type=Path, required=True, help=".npy to write")
    submit.add_argument("--group", choices=["rot90", "flips", "D4", "shifts"])
    submit.add_argument("--transforms", type=int)
    submit.set_defaults(run=_submit)

    for p in (simulate, submit):
        p.add_argument("--noise-sigma", type=float)
        p.add_argument("--noise-seed", type=int, default=0)
    for name, (_, help) in _BUILD_COMMANDS.items():  # listed here, run by _build_command
        sub.add_parser(name, help=help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``equirecon``; returns the exit status."""
    from service.client import EquiReconError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _BUILD_COMMANDS:
        return _build_command(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except InputFileError as exc:
        print(f"equirecon: {exc}", file=sys.stderr)
        return 2
    except EquiReconError as exc:
        print(f"equirecon: {exc}", file=sys.stderr)
        for error in exc.problem.get("errors") or []:
            print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
