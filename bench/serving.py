"""Serving overhead: the same reconstruction in-process, over HTTP, and through Celery.

For ``tv`` and ``pinv`` on one cheap 128x128 problem (inpainting, 50% of the
pixels, σ = 0.01; TV capped at 20 iterations so the overhead is visible), and
for one learned model per family (the EI-trained one first) on its own
training operator, with the equivariance score off and on (D4, 7 transforms):

(a) in-process: ``service.worker.run_batch`` on an ``Engine`` (onnxruntime in
    this process), the request already validated;
(b) HTTP: ``EquiReconClient.reconstruct`` against ``python -m service.cli
    serve`` (the embedded default) on a free loopback port; (b0) the same app
    with ``MAX_WAIT_MS=0``, to separate the micro-batcher's fill wait from the
    HTTP cost; (b1) ``serve`` with ``OPENBLAS_NUM_THREADS=1``, to show what
    numpy's BLAS threads (``np.linalg.norm`` in ``service.worker``) cost;
(c) Celery + Redis: a ``redis-server`` on loopback (configured as in
    docker-compose.yml), one ``equirecon worker`` and ``serve`` with
    ``EQUIRECON_BROKER_URL``; recorded as not available when ``service.dispatch``
    has no Celery backend or ``redis-server`` is missing.

Calls to (a), (b), (b0), (b1) and (c) are interleaved so background load hits all alike.
Target: (b) adds at most 15% (or 2 ms, whichever is larger) to (a)'s median.

    python -m bench.serving [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import pkgutil
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import (
    celery_worker,
    fmt,
    learned_cards,
    machine,
    md_table,
    redis_server,
    results_dir,
    serve_all,
    shared_engine,
    simulate,
    stats,
    write_results,
)
from bench.problems import validation_image
from service.api.validate import prepare_reconstruction
from service.client import EquiReconClient, EquiReconError
from service.engine import Engine
from service.schemas import ReconstructionCreate
from service.wire import encode_array
from service.worker import run_batch
from service.zoo import Zoo

SIZE = 128
INPAINTING: dict[str, Any] = {
    "type": "inpainting", "shape": [SIZE, SIZE], "mask": {"random": {"keep": 0.5, "seed": 0}}
}
SIGMA = 0.01
TV_OPTIONS = {"max_iter": 20, "tol": 1e-9}  # tol tiny: always exactly 20 iterations
SCORE_ON = {"group": "D4", "transforms": 7}
#: HTTP may add max(15% of the in-process median, 2 ms).
TARGET_FRACTION, TARGET_FLOOR_MS = 0.15, 2.0


@dataclass(frozen=True)
class Case:
    model: str
    spec: dict[str, Any]
    sigma: float
    score: bool

    @property
    def name(self) -> str:
        return f"{self.model} / score {'on' if self.score else 'off'}"

    def options(self) -> dict[str, Any]:
        eq: dict[str, Any] = dict(SCORE_ON) if self.score else {"enabled": False}
        return {"equivariance": eq, "tv": dict(TV_OPTIONS)}


def celery_status() -> dict[str, Any]:
    """Whether (c) can run: a Celery backend in ``service.dispatch`` and a ``redis-server``."""
    import service.dispatch

    modules = sorted(m.name for m in pkgutil.iter_modules(service.dispatch.__path__))
    if "celery" not in modules:
        return {
            "available": False,
            "reason": "not available: service.dispatch has no Celery backend yet (issue 4); "
            f"its modules are {modules}",
        }
    if shutil.which("redis-server") is None:
        return {"available": False,
                "reason": "not available: redis-server is not installed (apt-get install "
                          "redis-server)"}
    return {
        "available": True,
        "reason": "measured: redis-server (AOF, everysec, as docker-compose.yml) on loopback, "
        "one `python -m service.cli worker --pool threads` (default settings), the API as "
        "`serve` with EQUIRECON_BROKER_URL",
    }


def _learned_problem(card: Any) -> tuple[dict[str, Any], float] | None:
    training = card.raw.get("training") or {}
    spec = training.get("operator")
    if not isinstance(spec, dict):
        return None
    sigma = training.get("noise_sigma")
    sigma = float(sigma[-1] if isinstance(sigma, list) else sigma or SIGMA)
    return spec, sigma


def cases() -> tuple[list[Case], list[str]]:
    """The cases to run, and notes about learned models."""
    base = [Case(m, INPAINTING, SIGMA, s) for m in ("tv", "pinv") for s in (False, True)]
    notes = []
    learned = learned_cards()
    if not learned:
        notes.append("no learned model in models/zoo/cards/ (kind \"learned\") yet: "
                     "tv and pinv only")
    for card in learned:
        problem = _learned_problem(card)
        if problem is None:
            notes.append(f"{card.id}: its card names no training operator; skipped")
            continue
        base += [Case(card.id, problem[0], problem[1], s) for s in (False, True)]
        notes.append(f"{card.id}: on its own training operator {problem[0]}")
    return base, notes


def _body(case: Case, y: np.ndarray) -> dict[str, Any]:
    return {
        "model": case.model, "operator": case.spec, "measurements": encode_array(y),
        "noise": {"sigma": case.sigma}, "options": case.options(),
    }


#: The HTTP servers: key -> (label, Settings fields or None for `equirecon serve`, extra env).
SERVERS: dict[str, tuple[str, dict[str, Any] | None, dict[str, str]]] = {
    "http": ("(b) `python -m service.cli serve`, defaults", None, {}),
    "http_nowait": ("(b0) the same app, MAX_WAIT_MS=0", {"max_wait_ms": 0.0}, {}),
    "http_blas1": ("(b1) `serve`, defaults, OPENBLAS_NUM_THREADS=1", None,
                   {"OPENBLAS_NUM_THREADS": "1"}),
}


def measure(
    case: Case, engine: Engine, zoo: Zoo, clients: dict[str, EquiReconClient],
    samples: int, budget_s: float,
) -> dict[str, Any]:
    """Interleaved timings of one case: in-process, then each HTTP server, per round."""
    truth = validation_image("camera", case.spec["shape"][0])
    y = simulate(engine, case.spec, truth, case.sigma)
    task = prepare_reconstruction(ReconstructionCreate.model_validate(_body(case, y)), zoo)
    op = task.op
    params = {k: v[None] for k, v in op.params.items()}
    norms = np.array([op.norm], np.float32)
    times: dict[str, list[float]] = {"inprocess": [], "engine": [], **{k: [] for k in clients}}
    server: dict[str, dict[str, list[float]]] = {k: {"queue": [], "compute": []} for k in clients}
    images: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}  # a server that refuses this case is not asked again

    def once(record: bool) -> None:
        t0 = time.perf_counter()
        out = run_batch(engine, [task])[0]
        t1 = time.perf_counter()
        engine.reconstruct(case.model, op.kernel, task.y[None], params, norms, [task.options])
        t2 = time.perf_counter()
        if record:
            times["inprocess"].append(t1 - t0)
            times["engine"].append(t2 - t1)
        images["inprocess"] = out.image
        for key, client in clients.items():
            if key in failed:
                continue
            t0 = time.perf_counter()
            try:
                res = client.reconstruct(
                    case.model, case.spec, y, noise={"sigma": case.sigma},
                    options=case.options(),
                )
            except EquiReconError as exc:
                if key == "http":
                    raise  # the embedded default must serve every case
                failed[key] = str(exc)
                print(f"  {key} failed on {case.name}: {exc}", flush=True)
                continue
            dt = time.perf_counter() - t0
            assert res.image is not None, res.raw
            if record:
                times[key].append(dt)
                server[key]["queue"].append(res.queue_ms or 0.0)
                server[key]["compute"].append(res.compute_ms or 0.0)
            images[key] = res.image

    for _ in range(3):
        once(record=False)  # warm up sessions, connections, caches
    start = time.perf_counter()
    while len(times["inprocess"]) < samples:
        once(record=True)
        if len(times["inprocess"]) >= 3 and time.perf_counter() - start > budget_s:
            break
    row: dict[str, Any] = {
        "case": case.name, "model": case.model, "score": case.score,
        "operator": case.spec, "sigma": case.sigma,
        "iterations": int(task.options.max_iter) if case.model == "tv" else 1,
        "inprocess": stats(times["inprocess"]),
        "engine_reconstruct_only": stats(times["engine"]),
    }
    a = row["inprocess"]["median_ms"]
    for key in clients:
        if key in failed:
            row[key] = {"error": failed[key]}
            continue
        row[key] = stats(times[key])
        row[key]["server_queue_ms_median"] = round(float(np.median(server[key]["queue"])), 3)
        row[key]["server_compute_ms_median"] = round(float(np.median(server[key]["compute"])), 3)
        diff = np.max(np.abs(images[key] - images["inprocess"]))
        row[key]["max_abs_diff_vs_inprocess"] = float(diff)
        b = row[key]["median_ms"]
        row[key]["ratio_vs_inprocess"] = round(b / a, 3)
        row[key]["overhead_ms"] = round(b - a, 3)
    allowed = max(TARGET_FRACTION * a, TARGET_FLOOR_MS)
    row["target"] = {
        "allowed_overhead_ms": round(allowed, 3),
        "overhead_ms": row["http"]["overhead_ms"],
        "met": bool(row["http"]["overhead_ms"] <= allowed),
    }
    return row


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["cases"]:
        h, h0, h1 = r["http"], r["http_nowait"], r["http_blas1"]
        c = r.get("celery") or {}
        rows.append([
            r["case"], fmt(r["inprocess"]["median_ms"]), fmt(r["inprocess"]["p99_ms"]),
            fmt(r["engine_reconstruct_only"]["median_ms"]),
            fmt(h["median_ms"]), fmt(h["p99_ms"]), fmt(h["ratio_vs_inprocess"]),
            f"{fmt(h['server_queue_ms_median'])} / {fmt(h['server_compute_ms_median'])}",
            fmt(h0.get("median_ms")), fmt(h1.get("median_ms")),
            *(["failed (see JSON)", "-", "-"] if "error" in c else
              [fmt(c.get("median_ms")), fmt(c.get("p99_ms")), fmt(c.get("ratio_vs_inprocess"))]),
            f"{'met' if r['target']['met'] else 'missed'} "
            f"(+{fmt(r['target']['overhead_ms'])} vs ≤{fmt(r['target']['allowed_overhead_ms'])})",
        ])
    table = md_table(
        ["model / score", "(a) in-process median ms", "(a) p99", "Engine.reconstruct only",
         "(b) HTTP median ms", "(b) p99", "b/a", "(b) server queue / compute ms",
         "(b0) wait 0", "(b1) BLAS 1 thread", "(c) Celery + Redis median ms", "(c) p99",
         "c/a", "target: +max(15%, 2 ms)"],
        rows,
    )
    p = result["problem"]
    servers = "; ".join(label for label, _, _ in SERVERS.values())
    return (
        f"Problem: {p['description']}. (a) `service.worker.run_batch` on an in-process "
        f"`Engine` (what the worker runs; the request already validated); {servers}. "
        f"Up to {result['samples']} interleaved rounds per case (timing budget per case). "
        "All HTTP times are `EquiReconClient.reconstruct` (encode, POST, wait, decode).\n\n"
        + table
        + f"\n(c) Celery + Redis: {result['celery']['reason']}.\n\n"
        + "".join(f"- {n}\n" for n in result["notes"])
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tv only, a few calls (smoke test)")
    parser.add_argument("--out", help="results folder (default bench/results[/quick])")
    parser.add_argument("--samples", type=int, help="rounds per case (default 200, quick 3)")
    args = parser.parse_args(argv)
    samples = args.samples or (3 if args.quick else 200)
    budget_s = 2.0 if args.quick else 30.0
    all_cases, notes = cases()
    if args.quick:
        all_cases = [c for c in all_cases if c.model == "tv"]
    engine = shared_engine()
    zoo = engine.zoo
    rows = []
    celery = celery_status()
    with ExitStack() as stack:
        configs = [(s, e) for _, s, e in SERVERS.values()]
        keys = list(SERVERS)
        if celery["available"]:
            broker = stack.enter_context(redis_server())
            stack.enter_context(celery_worker(broker))
            configs.append((None, {"EQUIRECON_BROKER_URL": broker}))
            keys.append("celery")
        servers = stack.enter_context(serve_all(configs))
        clients = {
            key: stack.enter_context(EquiReconClient(server.url, timeout=120))
            for key, server in zip(keys, servers, strict=True)
        }
        for case in all_cases:
            row = measure(case, engine, zoo, clients, samples, budget_s)
            rows.append(row)
            print(
                f"{case.name:34s} (a) {row['inprocess']['median_ms']:8.2f} ms"
                f"  (b) {row['http']['median_ms']:8.2f} ms"
                f"  b/a {row['http']['ratio_vs_inprocess']:5.2f}"
                f"  (b0) {fmt(row['http_nowait'].get('median_ms')):>8s} ms"
                f"  (b1) {fmt(row['http_blas1'].get('median_ms')):>8s} ms"
                + (f"  (c) {fmt(row['celery'].get('median_ms')):>8s} ms" if "celery" in row else "")
                + f"  target {'met' if row['target']['met'] else 'missed'}",
                flush=True,
            )
    print(f"(c) Celery + Redis: {celery['reason']}")
    result = {
        "meta": machine(),
        "problem": {
            "description": "inpainting 128x128, 50% random pixels (seed 0), σ=0.01, camera; "
            "TV capped at 20 PDHG iterations (tol 1e-9); score on = D4, 7 transforms; "
            "learned models on their own training operator",
            "operator": INPAINTING, "sigma": SIGMA, "tv": TV_OPTIONS, "score_on": SCORE_ON,
        },
        "samples": samples,
        "cases": rows,
        "celery": celery,
        "notes": notes,
        "target": "HTTP median <= in-process median + max(15%, 2 ms)",
    }
    write_results(results_dir(args.out, args.quick), "serving", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
