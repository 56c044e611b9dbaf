"""Throughput with concurrent HTTP clients, micro-batching on versus off.

One API process per setting (``Settings`` + ``create_app``, see bench/server.py), all
running at once while the measurements rotate through them:
batching off (``MAX_BATCH=1``) and on (``MAX_BATCH=8`` and ``16``, ``MAX_WAIT_MS=5``; and
``16`` with no fill wait, ``MAX_WAIT_MS=0``),
each serving the same workloads (score off, so only request batching counts):

* ``pinv`` on 128x128 inpainting (one graph call, the cheapest request: HTTP-bound),
* ``pinv`` on 128x128 CT, 60 views (filtered back-projection, a few ms per image),
* ``tv`` on 128x128 inpainting capped at 20 iterations,
* one learned model per family (the EI-trained one first) on its own training operator.

For 1, 4, 16 and 64 closed-loop client threads (one ``httpx.Client`` each, the
request body encoded once), count the reconstructions finished in a fixed
window, bounded in requests too. The server's mean batch size comes from
``/metrics``; its resident memory (``VmRSS``) after each setting is recorded.
Target: at 16 clients, batching on gives >= 1.5x the throughput of batching off.

    python -m bench.batching [--quick] [--out DIR] [--window S]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    compile_spec,
    fmt,
    learned_cards,
    machine,
    md_table,
    results_dir,
    serve_all,
    shared_engine,
    simulate,
    stats,
    write_results,
)
from bench.problems import validation_image
from bench.serving import INPAINTING, SIGMA, _learned_problem
from service.engine import Engine, ReconOptions
from service.wire import encode_array

CT: dict[str, Any] = {"type": "ct", "shape": [128, 128], "angles": {"uniform": {"count": 60}}}
CLIENTS = (1, 4, 16, 64)
SETTINGS: dict[str, dict[str, Any]] = {
    "off (MAX_BATCH=1)": {"max_batch": 1, "max_wait_ms": 5.0},
    "on (MAX_BATCH=8, MAX_WAIT_MS=5)": {"max_batch": 8, "max_wait_ms": 5.0},
    "on (MAX_BATCH=16, MAX_WAIT_MS=5)": {"max_batch": 16, "max_wait_ms": 5.0},
    # Greedy: whatever queued while the worker was busy, no fill wait (the idle request
    # pays nothing); shows what the wait itself buys.
    "on (MAX_BATCH=16, MAX_WAIT_MS=0)": {"max_batch": 16, "max_wait_ms": 0.0},
}
TARGET_CLIENTS, TARGET_SPEEDUP = 16, 1.5


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    spec: dict[str, Any]
    sigma: float
    tv: dict[str, Any] | None = None

    def body(self, y: np.ndarray) -> bytes:
        options: dict[str, Any] = {"equivariance": {"enabled": False}}
        if self.tv:
            options["tv"] = self.tv
        return json.dumps({
            "model": self.model, "operator": self.spec, "measurements": encode_array(y),
            "noise": {"sigma": self.sigma}, "options": options,
        }).encode()


def workloads(quick: bool) -> tuple[list[Workload], list[str]]:
    items = [
        Workload("pinv / inpainting", "pinv", INPAINTING, SIGMA),
        Workload("pinv / ct 60 views", "pinv", CT, 0.1),
        Workload("tv / inpainting, 20 it.", "tv", INPAINTING, SIGMA,
                 {"max_iter": 20, "tol": 1e-9}),
    ]
    if quick:
        return items[:1], ["quick run: pinv / inpainting only"]
    notes = []
    learned = learned_cards()
    if not learned:
        notes.append("no learned model in models/zoo/cards/ yet: pinv and tv only")
    for card in learned:
        problem = _learned_problem(card)
        if problem is not None:
            items.append(Workload(f"{card.id} / {problem[0]['type']}", card.id, *problem))
    return items, notes


def _metric(text: str, name: str, labels: tuple[str, ...] = ()) -> float:
    """A sample of the Prometheus text carrying all ``labels`` (``'k="v"'``), in any order."""
    block = ("\\{" + "".join(rf"(?=[^}}]*{re.escape(lab)})" for lab in labels) + "[^}]*\\}"
             if labels else "")
    match = re.search(rf"^{name}{block} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


_POST = ('route="/v1/reconstructions"', 'method="POST"')


def _counters(url: str) -> tuple[float, float, float, float]:
    """Batch-size sum and count; server-side POST /v1/reconstructions seconds sum and count."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return (
        _metric(text, "equirecon_batch_size_sum"),
        _metric(text, "equirecon_batch_size_count"),
        _metric(text, "equirecon_http_request_duration_seconds_sum", _POST),
        _metric(text, "equirecon_http_request_duration_seconds_count", _POST),
    )


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a running process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    if len(fields) != 2:  # an exited, unreaped process has no memory lines
        raise RuntimeError(f"process {pid} is not running: no memory to read")
    return fields


def load(
    url: str, body: bytes, clients: int, window_s: float, max_requests: int
) -> dict[str, Any]:
    """Closed-loop load: ``clients`` threads post ``body`` until the window or the cap ends."""
    barrier = threading.Barrier(clients + 1)
    lock = threading.Lock()
    done: list[tuple[float, float]] = []
    errors: list[str] = []
    shared = {"deadline": 0.0, "issued": 0}
    headers = {"content-type": "application/json"}

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            try:
                http.post("/v1/reconstructions", content=body, headers=headers)  # warm-up
            finally:
                barrier.wait()
            while True:
                with lock:
                    over = time.perf_counter() >= shared["deadline"]
                    if over or shared["issued"] >= max_requests:
                        return
                    shared["issued"] += 1
                t0 = time.perf_counter()
                r = http.post("/v1/reconstructions", content=body, headers=headers)
                t1 = time.perf_counter()
                with lock:
                    if r.status_code == 200:
                        done.append((t0, t1))
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    shared["deadline"] = time.perf_counter() + 3600.0  # until every client has warmed up
    sums0 = _counters(url)
    barrier.wait()
    start = time.perf_counter()
    shared["deadline"] = start + window_s
    for t in threads:
        t.join()
    sums1 = _counters(url)
    if len(done) >= max_requests:  # the request cap ended the run: the last completion ends it
        count, span = len(done), max(t1 for _, t1 in done) - start
    else:
        count, span = sum(t1 <= shared["deadline"] for _, t1 in done), window_s
    batches, posts = sums1[1] - sums0[1], sums1[3] - sums0[3]
    return {
        "clients": clients,
        "completed": count,
        "seconds": round(span, 3),
        "throughput_per_s": round(count / span, 2) if span > 0 else 0.0,
        "latency": stats([t1 - t0 for t0, t1 in done]) if done else None,
        "mean_batch_size": round((sums1[0] - sums0[0]) / batches, 2) if batches else None,
        # Inside the app (middleware to response); the rest of the client's latency is
        # sockets, uvicorn's parsing and the client itself.
        "server_mean_ms": round(1e3 * (sums1[2] - sums0[2]) / posts, 3) if posts else None,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def engine_bound(
    engine: Engine, w: Workload, y: np.ndarray, sizes: tuple[int, ...], repeats: int
) -> dict[str, float]:
    """Per-item ``Engine.reconstruct`` time at each batch size, in-process: what stacking
    can save at most, before any HTTP cost (which does not batch)."""
    op = compile_spec(w.spec)
    options = ReconOptions(sigma=w.sigma, **({} if w.tv is None else {
        "max_iter": w.tv["max_iter"], "tol": w.tv["tol"]}))
    out = {}
    for b in sizes:
        yb = np.repeat(op.to_graph(y)[None], b, axis=0)
        params = {k: np.repeat(v[None], b, axis=0) for k, v in op.params.items()}
        norms = np.full(b, op.norm, np.float32)

        def run(yb: np.ndarray = yb, params: dict[str, np.ndarray] = params,
                norms: np.ndarray = norms, b: int = b) -> None:
            engine.reconstruct(w.model, op.kernel, yb, params, norms, [options] * b)

        run()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        out[str(b)] = round(1e3 * float(np.median(times)) / b, 3)
    return out


def markdown(result: dict[str, Any]) -> str:
    clients = result["clients"]
    last = clients[-1]
    headers = ["workload", "setting", *[f"{c} clients /s" for c in clients],
               f"mean batch @{last}", f"client median ms @{last}",
               f"in-app mean ms @{last}", "server RSS MiB after"]
    rows = []
    for w in result["workloads"]:
        for setting, runs in w["settings"].items():
            top = runs[-1]
            rows.append([
                w["name"], setting, *[fmt(r["throughput_per_s"], 1) for r in runs],
                fmt(top["mean_batch_size"]),
                fmt(top["latency"]["median_ms"] if top["latency"] else None),
                fmt(top.get("server_mean_ms")),
                fmt(w["rss_mb"][setting].get("VmRSS"), 0),
            ])
    sizes = list(result["workloads"][0]["engine_per_item_ms"])
    bound = md_table(
        ["workload", *[f"Engine ms/item, batch {b}" for b in sizes],
         f"engine-only gain at batch {sizes[-1]}"],
        [[w["name"], *[fmt(w["engine_per_item_ms"][b]) for b in sizes],
          fmt(w["engine_per_item_ms"][sizes[0]] / w["engine_per_item_ms"][sizes[-1]])]
         for w in result["workloads"]],
    )
    speed = md_table(
        ["workload", f"best of MAX_WAIT_MS=5 settings / off, {TARGET_CLIENTS} clients",
         "target >= 1.5x"],
        [[w["name"], fmt(w["target"]["speedup"]), "met" if w["target"]["met"] else "missed"]
         for w in result["workloads"] if w.get("target")],
    ) if any(w.get("target") for w in result["workloads"]) else ""
    return (
        f"Reconstructions/s, closed-loop HTTP clients (threads in one process, body encoded "
        f"once), {result['window_s']} s window per cell, score off. One server process per "
        "setting, all up at once; cells rotate through the settings. Server RSS: after "
        "that workload and the ones above it. In-app ms: the app's own latency histogram "
        "(middleware to response)."
        + (f" Server environment: {result['server_env']}." if result.get("server_env") else "")
        + "\n\n"
        + md_table(headers, rows)
        + "\nWhat stacking saves inside the engine (in-process `Engine.reconstruct`, score off; "
        "the upper bound for micro-batching before the HTTP cost, which does not batch):\n\n"
        + bound + "\n" + speed
        + "".join(f"\n- {n}" for n in result["notes"]) + "\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two settings, 1 and 4 clients")
    parser.add_argument("--out", help="results folder (default bench/results[/quick])")
    parser.add_argument("--window", type=float, help="seconds per cell (default 6, quick 0.5)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the servers (experiments, e.g. "
                        "OPENBLAS_NUM_THREADS=1); recorded in the results")
    args = parser.parse_args(argv)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    window = args.window or (0.5 if args.quick else 6.0)
    max_requests = 20 if args.quick else 5000
    clients = (1, 4) if args.quick else CLIENTS
    settings = dict(list(SETTINGS.items())[:2]) if args.quick else SETTINGS
    items, notes = workloads(args.quick)
    engine = shared_engine()
    measurements = {
        w.name: simulate(engine, w.spec, validation_image("camera", w.spec["shape"][0]), w.sigma)
        for w in items
    }
    bodies = {w.name: w.body(measurements[w.name]) for w in items}
    batch_sizes = (1, 4) if args.quick else (1, 8, 16)
    bound = {w.name: engine_bound(engine, w, measurements[w.name], batch_sizes,
                                  1 if args.quick else 5) for w in items}
    table: dict[str, dict[str, list[dict[str, Any]]]] = {w.name: {} for w in items}
    memory: dict[str, dict[str, dict[str, float]]] = {w.name: {} for w in items}
    # Every setting's server is up at once and the cells rotate through the settings, so
    # drifting background load hits all settings alike (idle servers cost next to nothing).
    with serve_all([(knobs, server_env) for knobs in settings.values()]) as servers:
        by_label = dict(zip(settings, servers, strict=True))
        for w in items:
            for label in settings:
                table[w.name][label] = []
            for n in clients:
                for label, server in by_label.items():
                    run = load(server.url, bodies[w.name], n, window, max_requests)
                    table[w.name][label].append(run)
                    print(f"{w.name:28s} {label:34s} {n:3d} clients "
                          f"{run['throughput_per_s']:8.1f} /s  mean batch "
                          f"{fmt(run['mean_batch_size'])}", flush=True)
            for label, server in by_label.items():
                memory[w.name][label] = rss_mb(server.pid)  # cumulative: after this workload
    out_rows = []
    for w in items:
        row: dict[str, Any] = {
            "name": w.name, "model": w.model, "operator": w.spec, "sigma": w.sigma, "tv": w.tv,
            "settings": table[w.name], "rss_mb": memory[w.name],
            "engine_per_item_ms": bound[w.name],
        }
        if TARGET_CLIENTS in clients:
            i = clients.index(TARGET_CLIENTS)
            cells = table[w.name]
            off = cells["off (MAX_BATCH=1)"][i]["throughput_per_s"]
            best = max(r[i]["throughput_per_s"] for k, r in cells.items()
                       if k.startswith("on") and "MAX_WAIT_MS=5" in k)  # as the issue states
            speedup = best / off if off else 0.0
            row["target"] = {"speedup": round(speedup, 3), "met": bool(speedup >= TARGET_SPEEDUP)}
        out_rows.append(row)
    result = {
        "meta": machine(),
        "window_s": window,
        "max_requests": max_requests,
        "clients": list(clients),
        "settings": settings,
        "server_env": server_env,
        "workloads": out_rows,
        "notes": notes,
        "target": f"at {TARGET_CLIENTS} clients, batching on >= {TARGET_SPEEDUP}x batching off",
    }
    write_results(results_dir(args.out, args.quick), "batching", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
