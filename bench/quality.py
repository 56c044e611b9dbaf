"""Reconstruction quality of the model-based models, end to end over HTTP.

Starts ``equirecon serve`` on a free loopback port (or uses ``--url``), and for
every validation problem (bench/problems.py: 128x128 images, a little noise)
simulates the measurements, reconstructs them with ``pinv``, ``tv`` and
``adjoint`` and prints PSNR, the equivariance score and the time per request.
Results go to ``bench/results/quality.{json,md}``; ``--write-cards`` also
stores the metrics in the model cards (and refreshes the zoo manifest).

    python -m bench.quality [--quick] [--write-cards] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.problems import PROBLEMS, psnr, validation_image
from service.client import EquiReconClient

RESULTS = Path(__file__).parent / "results"
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
MODELS = ("pinv", "tv", "adjoint")


@contextmanager
def served(url: str | None):
    """Yield a base URL: the given one, or a fresh server's on a free port."""
    if url:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(client: EquiReconClient, labels: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label in labels:
        spec, sigma, image_name = PROBLEMS[label]
        truth = validation_image(image_name, spec["shape"][0])
        y = client.simulate(spec, truth, {"sigma": sigma, "seed": 0})
        row: dict[str, Any] = {"kernel_spec": spec, "sigma": sigma, "image": image_name}
        for model in MODELS:
            t0 = time.perf_counter()
            res = client.reconstruct(model, spec, y, noise={"sigma": sigma})
            seconds = time.perf_counter() - t0
            assert res.image is not None and res.score_db is not None, res.raw
            row[model] = {
                "psnr_db": round(psnr(res.image, truth), 2),
                "score": res.score,
                "score_db": round(res.score_db, 2),
                "group": res.group,
                "iterations": res.iterations,
                "seconds": round(seconds, 3),
            }
        rows[label] = row
        print(
            f"{label:38s} pinv {row['pinv']['psnr_db']:6.2f} dB"
            f"  tv {row['tv']['psnr_db']:6.2f} dB"
            f"  score tv {row['tv']['score_db']:6.2f} dB"
            f" / adjoint {row['adjoint']['score_db']:7.2f} dB"
            f"  tv time {row['tv']['seconds']:.2f} s",
            flush=True,
        )
    return rows


def markdown(rows: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs), "
        f"`python -m bench.quality`. 128x128 validation images (64x64 for dense CS); "
        "score = test-time equivariance error (higher dB = more self-consistent); "
        "time = one HTTP request, reconstruction plus score.",
        "",
        "| family | noise σ | pinv dB | tv dB | tv score dB (group) | pinv score dB "
        "| adjoint score dB | tv iterations | tv time s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        tv = r["tv"]
        lines.append(
            f"| {label} | {r['sigma']} | {r['pinv']['psnr_db']:.2f} | {tv['psnr_db']:.2f} | "
            f"{tv['score_db']:.2f} ({tv['group']}) | {r['pinv']['score_db']:.2f} | "
            f"{r['adjoint']['score_db']:.2f} | {tv['iterations']} | {tv['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_cards(rows: dict[str, Any]) -> None:
    from models.export import write_manifest

    for model in MODELS:
        path = ZOO / "cards" / f"{model}.json"
        card = json.loads(path.read_text())
        card["metrics"] = {
            "validation": "bench/problems.py (scikit-image photos, Shepp-Logan), 128x128",
            "command": "python -m bench.quality --write-cards",
            "by_problem": {
                label: {k: r[model][k] for k in ("psnr_db", "score_db", "group", "seconds")}
                for label, r in rows.items()
            },
        }
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_manifest(ZOO)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--quick", action="store_true", help="two problems only (smoke test)")
    parser.add_argument("--write-cards", action="store_true")
    parser.add_argument("--out", help="results folder (default bench/results; quick: .../quick)")
    args = parser.parse_args(argv)
    labels = ["denoising", "inpainting"] if args.quick else list(PROBLEMS)
    with served(args.url) as url, EquiReconClient(url, timeout=300) as client:
        rows = run(client, labels)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine() + " " + platform.processor(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
    }
    out = Path(args.out) if args.out else RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(rows, meta))
    if args.write_cards and not args.quick:
        write_cards(rows)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
