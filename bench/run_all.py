"""Run every benchmark, then write bench/results/latest.{json,md}.

Each script runs in its own process (``python -m bench.NAME``), one after the
other, so no engine or server of one disturbs the next; each writes its own
``NAME.json`` and ``NAME.md``. This runner collects them with the machine
(CPU model, versions, date, and whether a model training or evaluation job
shared the CPU) into ``latest.json`` and one markdown page, ``latest.md``,
that opens with the issue's targets, met or missed. A script that crashes is recorded and the rest
still run (exit status 1 at the end); no script fails on a time. With
``--only``, the other scripts' last results in the folder stay on the page,
marked as earlier runs.

    python -m bench.run_all [--quick] [--out DIR] [--only serving,batching]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, md_table, results_dir, training_jobs, write_json

#: Run order: cheap and CPU-quiet first, then the long ones.
SCRIPTS = ("quality", "serving", "batching", "tv_compare", "scaling", "coldstart")
TITLES = {
    "quality": "Quality (validation images, over HTTP)",
    "serving": "Serving overhead: in-process vs HTTP vs Celery",
    "batching": "Throughput: micro-batching on vs off",
    "tv_compare": "TV against skimage and deepinv",
    "scaling": "Latency against image size",
    "coldstart": "Cold start and memory",
}


class Watch:
    """Samples :func:`training_jobs` every few seconds while a script runs."""

    def __init__(self, every_s: float = 3.0) -> None:
        self.every_s, self.seen = every_s, set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.seen.update(training_jobs())
            if self._stop.wait(self.every_s):
                return


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, one row each, from whatever results exist."""
    rows: list[dict[str, str]] = []
    serving = results.get("serving")
    if serving:
        for case in serving["cases"]:
            t = case["target"]
            rows.append({
                "target": f"embedded HTTP adds ≤ max(15%, 2 ms) to in-process median "
                          f"({case['case']})",
                "measured": f"in-process {case['inprocess']['median_ms']:.2f} ms, HTTP "
                            f"{case['http']['median_ms']:.2f} ms (+{t['overhead_ms']:.2f}, "
                            f"allowed +{t['allowed_overhead_ms']:.2f})",
                "verdict": "met" if t["met"] else "missed",
            })
        if serving["celery"]["available"]:
            for case in serving["cases"]:
                c = case["celery"]
                rows.append({
                    "target": f"(no target) Celery + Redis vs in-process ({case['case']})",
                    "measured": f"failed: {c['error']}" if "error" in c else
                                f"in-process {case['inprocess']['median_ms']:.2f} ms, Celery "
                                f"{c['median_ms']:.2f} ms (c/a {c['ratio_vs_inprocess']:.2f})",
                    "verdict": "error" if "error" in c else "-",
                })
        else:
            rows.append({"target": "Celery + Redis overhead",
                         "measured": serving["celery"]["reason"], "verdict": "not available"})
    batching = results.get("batching")
    if batching:
        for w in batching["workloads"]:
            if w.get("target"):
                rows.append({
                    "target": f"batching at 16 clients ≥ 1.5x throughput ({w['name']})",
                    "measured": f"{w['target']['speedup']:.2f}x",
                    "verdict": "met" if w["target"]["met"] else "missed",
                })
    for name in ("tv_compare", "coldstart"):
        for t in (results.get(name) or {}).get("targets", []):
            rows.append({k: t[k] for k in ("target", "measured", "verdict")})
    return rows


def markdown(meta: dict[str, Any], results: dict[str, Any], errors: dict[str, str],
             folder: Path, quick: bool, seconds: dict[str, float] | None = None) -> str:
    lines = [
        "# EquiRecon benchmarks",
        "",
        f"`python -m bench.run_all{' --quick' if quick else ''}` (`make bench`), "
        f"{meta['date']}, {meta['cpu_model']} ({meta['cpus']} CPUs), Python {meta['python']}, "
        f"numpy {meta['numpy']}, onnxruntime {meta['onnxruntime']}, torch {meta['torch']}.",
        "",
    ]
    during = meta.get("disturbed_scripts", {})
    disturbed = sorted({j for r in results.values() for j in r.get("meta", {}).get(
        "training_jobs", [])} | set(meta["training_jobs"]) | {j for v in during.values()
                                                            for j in v})
    if disturbed:
        lines += ["> **Measured while a model training/evaluation job (or a test run) used "
                  f"the CPU** ({'; '.join(disturbed)}"
                  + (f"; during: {', '.join(sorted(during))}" if during else "")
                  + "): timings are disturbed, read them as upper bounds and compare columns "
                  "of one table rather than absolute numbers.", ""]
    if quick:
        lines += ["> Quick mode: tiny runs to check the scripts, not figures to quote.", ""]
    ran = results if seconds is None else seconds
    earlier = [n for n in SCRIPTS if n in results and n not in ran]
    if earlier:
        lines += ["> From earlier runs (their own dates in the JSON): "
                  + ", ".join(f"{n} ({results[n]['meta']['date']})" for n in earlier), ""]
    lines += ["## Targets", "",
              md_table(["target", "measured", "verdict"],
                       [[t["target"], t["measured"], t["verdict"]] for t in targets(results)])]
    for name in SCRIPTS:
        md = folder / f"{name}.md"
        if name in errors:
            lines += [f"## {TITLES[name]}", "", f"Failed: `{errors[name][-500:]}`", ""]
        elif name in results and md.exists():
            lines += [f"## {TITLES[name]}", "", md.read_text().rstrip(), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script's tiny run")
    parser.add_argument("--out", help="results folder (default bench/results[/quick])")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(SCRIPTS))
    args = parser.parse_args(argv)
    folder = results_dir(args.out, args.quick)
    chosen = args.only.split(",") if args.only else list(SCRIPTS)
    unknown = set(chosen) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown scripts: {sorted(unknown)}")
    meta = machine()
    if meta["training_jobs"]:
        print(f"note: {meta['note']}: {meta['training_jobs']}", flush=True)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    disturbed: dict[str, list[str]] = {}
    for name in chosen:
        cmd = [sys.executable, "-m", f"bench.{name}", "--out", str(folder)]
        cmd += ["--quick"] if args.quick else []
        print(f"\n== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        with Watch() as watch:
            proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        seconds[name] = round(time.perf_counter() - t0, 1)
        if watch.seen:
            disturbed[name] = sorted(watch.seen)
            print(f"note: {name} shared the CPU with {disturbed[name]}", flush=True)
        if proc.stderr:
            sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            errors[name] = proc.stderr or f"exit status {proc.returncode}"
            continue
        results[name] = json.loads((folder / f"{name}.json").read_text())
    earlier = [n for n in SCRIPTS if n not in chosen and (folder / f"{n}.json").exists()]
    for name in earlier:  # --only: the other scripts' last results stay on the page
        results[name] = json.loads((folder / f"{name}.json").read_text())
    meta["disturbed_scripts"] = disturbed
    latest = {"meta": meta, "quick": args.quick, "seconds": seconds, "errors": errors,
              "from_earlier_runs": earlier, "targets": targets(results),
              "results": {n: results[n] for n in SCRIPTS if n in results}}
    write_json(folder / "latest.json", latest)
    (folder / "latest.md").write_text(
        markdown(meta, results, errors, folder, args.quick, seconds)
    )
    print(f"\nwrote {folder / 'latest.json'} and {folder / 'latest.md'}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
