"""Cold start and resident memory of the API process.

Cold start: wall time from launching ``python -m service.cli serve`` (a fresh
process on a free loopback port) to the first ``GET /readyz`` answering 200,
polled every 10 ms; repeated, with the stages measured apart in a fresh
process too (importing ``service.main``, ``Zoo.load`` with its sha256 checks,
``Engine`` creating every onnxruntime session).

Memory: ``VmRSS`` (resident now) and ``VmHWM`` (peak resident) from
``/proc/PID/status`` of the API process, whose in-process worker holds the
whole zoo: once ready, then after a few requests (adjoint, pinv and tv on
128x128 inpainting, pinv and tv on CT and MRI, every learned model on its own
training operator; the score on). With a Celery backend and ``redis-server``
present, the same for a scale-out deployment: the RSS of one ``equirecon
worker`` process and of the API process.

Targets: cold start under 5 s; worker memory under 1.5 GB.

    python -m bench.coldstart [--quick] [--out DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import numpy as np

from bench.batching import rss_mb
from bench.common import (
    ROOT,
    celery_worker,
    fmt,
    learned_cards,
    machine,
    md_table,
    redis_server,
    results_dir,
    serve,
    shared_engine,
    simulate,
    write_results,
)
from bench.problems import validation_image
from bench.serving import _learned_problem, celery_status
from service.client import EquiReconClient, EquiReconError

COLD_TARGET_S = 5.0
MEMORY_TARGET_MB = 1.5 * 1024
_STAGES = """
import json, time
t0 = time.perf_counter()
import service.main
from service.config import Settings
from service.engine import Engine
from service.zoo import Zoo
t1 = time.perf_counter()
zoo = Zoo.load(Settings().model_dir)
t2 = time.perf_counter()
engine = Engine(zoo, "cpu")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "zoo_load_s": t2 - t1, "engine_s": t3 - t2,
                  "graphs": len(engine._sessions)}))
"""


def stages() -> dict[str, Any]:
    """Import, zoo load and engine creation, timed inside one fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _STAGES], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=300)
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in raw.items()}


def requests(quick: bool) -> list[tuple[str, dict[str, Any], float]]:
    """(model, operator, sigma) of the requests sent before the memory is read: the
    one-shot and TV models on inpainting, CT and MRI, every learned model on its own
    training operator (all 128x128, score on)."""
    inpainting = {"type": "inpainting", "shape": [128, 128],
                  "mask": {"random": {"keep": 0.5, "seed": 0}}}
    if quick:
        return [("pinv", inpainting, 0.01)]
    ct = {"type": "ct", "shape": [128, 128], "angles": {"uniform": {"count": 60}}}
    mri = {"type": "mri", "shape": [128, 128],
           "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}}}
    sent = [(m, inpainting, 0.01) for m in ("adjoint", "pinv", "tv")]
    sent += [(m, op, s) for m in ("pinv", "tv") for op, s in ((ct, 0.1), (mri, 0.01))]
    for card in learned_cards(one_per_family=False):
        problem = _learned_problem(card)
        if problem is not None:
            sent.append((card.id, *problem))
    return sent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one start, one request")
    parser.add_argument("--out", help="results folder (default bench/results[/quick])")
    parser.add_argument("--repeats", type=int, help="cold starts (default 5, quick 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    engine = shared_engine()
    sent = requests(args.quick)
    bodies = [(m, op, s, simulate(engine, op, validation_image("camera", op["shape"][0]), s))
              for m, op, s in sent]
    starts: list[float] = []
    memory: dict[str, Any] = {}
    for i in range(repeats):
        with serve() as server:
            starts.append(server.ready_s)
            print(f"cold start {i + 1}: {server.ready_s:.3f} s to /readyz 200", flush=True)
            if i == 0:
                memory["ready"] = rss_mb(server.pid)
                with EquiReconClient(server.url, timeout=300) as client:
                    for model, op, sigma, y in bodies:
                        res = client.reconstruct(model, op, y, noise={"sigma": sigma})
                        assert res.image is not None, res.raw
                memory["after_requests"] = rss_mb(server.pid)
                memory["requests"] = [f"{m} / {op['type']}" for m, op, _, _ in bodies]
                print(f"memory: ready {memory['ready']}, after {len(bodies)} requests "
                      f"{memory['after_requests']} (MiB)", flush=True)
    scaleout: dict[str, Any] = {"measured": False}
    celery = celery_status()
    if args.quick:
        scaleout["reason"] = "skipped in quick mode"
    elif not celery["available"]:
        scaleout["reason"] = celery["reason"]
    else:
        with (redis_server() as broker, celery_worker(broker) as worker,
              serve(None, env={"EQUIRECON_BROKER_URL": broker}) as api):
            scaleout.update(measured=True, worker_ready=rss_mb(worker.pid),
                            api_ready=rss_mb(api.pid), api_cold_start_s=round(api.ready_s, 3))
            failures = []
            with EquiReconClient(api.url, timeout=300) as client:
                for model, op, sigma, y in bodies:
                    try:
                        client.reconstruct(model, op, y, noise={"sigma": sigma})
                    except EquiReconError as exc:  # recorded: the memory is read regardless
                        failures.append(f"{model} / {op['type']}: {exc}")
            scaleout.update(failed_requests=failures,
                            worker_after_requests=rss_mb(worker.pid),
                            api_after_requests=rss_mb(api.pid))
        print(f"Celery scale-out: worker {scaleout['worker_ready']} -> "
              f"{scaleout['worker_after_requests']}, API {scaleout['api_after_requests']} "
              "(MiB)", flush=True)
    parts = stages()
    print(f"stages in a fresh process: {parts}", flush=True)
    median = float(np.median(starts))
    peak = memory["after_requests"]["VmHWM"]
    result = {
        "meta": machine(),
        "command": "python -m service.cli serve (fresh process, free loopback port)",
        "cold_start_s": {"median": round(median, 3), "min": round(min(starts), 3),
                         "max": round(max(starts), 3), "runs": [round(s, 3) for s in starts]},
        "stages_s": parts,
        "memory_mib": memory,
        "scaleout_memory_mib": scaleout,
        "targets": [
            {"target": f"cold start < {COLD_TARGET_S} s", "measured": f"{median:.2f} s (median)",
             "verdict": "met" if median < COLD_TARGET_S else "missed"},
            {"target": "worker memory < 1.5 GB (1536 MiB), embedded (API process = worker)",
             "measured": f"peak {peak:.0f} MiB (VmHWM) after {len(bodies)} requests",
             "verdict": "met" if peak < MEMORY_TARGET_MB else "missed"},
        ] + ([{
            "target": "worker memory < 1.5 GB (1536 MiB), Celery worker process",
            "measured": f"peak {scaleout['worker_after_requests']['VmHWM']:.0f} MiB (VmHWM) "
                        f"after {len(bodies)} requests"
                        + (f", {len(scaleout['failed_requests'])} of which failed (not "
                           "counted: read as a lower bound)" if scaleout["failed_requests"]
                           else ""),
            "verdict": "met" if scaleout["worker_after_requests"]["VmHWM"] < MEMORY_TARGET_MB
                       else "missed",
        }] if scaleout["measured"] else []),
    }
    write_results(results_dir(args.out, args.quick), "coldstart", result, markdown(result))
    return result


def _scaleout_rows(s: dict[str, Any]) -> list[list[str]]:
    if not s["measured"]:
        return [["Celery scale-out memory", s["reason"]]]
    w, a = s["worker_after_requests"], s["api_after_requests"]
    return [
        ["Celery: worker and API launched together, to /readyz 200",
         f"{fmt(s['api_cold_start_s'])} s"],
        ["Celery worker RSS once ready", f"{fmt(s['worker_ready']['VmRSS'], 0)} MiB"],
        ["Celery worker after the same requests (VmRSS / peak VmHWM)",
         f"{fmt(w['VmRSS'], 0)} / {fmt(w['VmHWM'], 0)} MiB"],
        ["Celery API process after them (VmRSS / peak VmHWM)",
         f"{fmt(a['VmRSS'], 0)} / {fmt(a['VmHWM'], 0)} MiB"],
        ["Celery requests that failed", "; ".join(s["failed_requests"]) or "none"],
    ]


def markdown(result: dict[str, Any]) -> str:
    c, s, m = result["cold_start_s"], result["stages_s"], result["memory_mib"]
    table = md_table(
        ["measure", "value"],
        [["cold start to /readyz 200 (median / min / max)",
          f"{fmt(c['median'])} / {fmt(c['min'])} / {fmt(c['max'])} s ({len(c['runs'])} runs)"],
         ["  import service.main (fresh process)", f"{fmt(s['import_s'])} s"],
         ["  Zoo.load (sha256 of every file)", f"{fmt(s['zoo_load_s'], 3)} s"],
         ["  Engine: onnxruntime sessions", f"{fmt(s['engine_s'])} s ({s['graphs']} graphs)"],
         ["RSS once ready (VmRSS)", f"{fmt(m['ready']['VmRSS'], 0)} MiB"],
         [f"RSS after {len(m['requests'])} requests (VmRSS / peak VmHWM)",
          f"{fmt(m['after_requests']['VmRSS'], 0)} / {fmt(m['after_requests']['VmHWM'], 0)} MiB"],
         *_scaleout_rows(result["scaleout_memory_mib"])],
    )
    targets = md_table(["target", "measured", "verdict"],
                       [[t["target"], t["measured"], t["verdict"]] for t in result["targets"]])
    return f"`{result['command']}`.\n\n{table}\n{targets}"


if __name__ == "__main__":
    main()
