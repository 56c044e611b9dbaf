"""Latency against image size, and the fitted exponent against pixel count.

``Engine.reconstruct`` in-process (compute only: no HTTP, no score), for
``pinv``, ``tv`` (a fixed 20 PDHG iterations, tol 0, so every size does the same
work) and the learned models whose card allows other shapes (one per family,
the EI-trained one first), on square images
from 64x64 to 512x512 for denoising, inpainting (50% pixels) and single-coil
MRI (4x Cartesian); CT (60 views) stops at 256x256 because it is slow. The
exponent ``b`` is the least-squares slope of ``log(ms)`` on ``log(pixels)``:
``ms ∝ pixels^b`` (1 = linear in the pixel count).

    python -m bench.scaling [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import (
    compile_spec,
    fmt,
    learned_cards,
    machine,
    md_table,
    results_dir,
    shared_engine,
    simulate,
    stats,
    write_results,
)
from bench.problems import validation_image
from service.engine import Engine, ReconOptions

SIZES: tuple[int, ...] = (64, 128, 256, 512)
CT_SIZES: tuple[int, ...] = (64, 128, 256)
TV_ITERATIONS = 20
#: family -> (spec builder, noise sigma)
FAMILIES: dict[str, tuple[Any, float]] = {
    "denoising": (lambda n: {"type": "denoising", "shape": [n, n]}, 0.1),
    "inpainting": (lambda n: {"type": "inpainting", "shape": [n, n],
                              "mask": {"random": {"keep": 0.5, "seed": 0}}}, 0.01),
    "mri": (lambda n: {"type": "mri", "shape": [n, n], "mask": {"cartesian": {
        "acceleration": 4, "center_fraction": 0.08, "seed": 0}}}, 0.01),
    "ct": (lambda n: {"type": "ct", "shape": [n, n], "angles": {"uniform": {"count": 60}}}, 0.1),
}


def exponent(pixels: list[int], ms: list[float]) -> float | None:
    """Least-squares slope of log(ms) against log(pixels); None with fewer than 2 sizes."""
    if len(pixels) < 2:
        return None
    slope, _ = np.polyfit(np.log(pixels), np.log(ms), 1)
    return round(float(slope), 3)


def _timed(fn: Any, budget_s: float, max_repeats: int) -> list[float]:
    fn()  # warm-up: the first run of a new shape allocates
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure(engine: Engine, model: str, family: str, size: int, budget_s: float,
            max_repeats: int) -> dict[str, Any]:
    build, sigma = FAMILIES[family]
    spec = build(size)
    op = compile_spec(spec)
    y = simulate(engine, spec, validation_image("camera", size), sigma)
    yg = op.to_graph(y)[None]
    params = {k: v[None] for k, v in op.params.items()}
    norms = np.array([op.norm], np.float32)
    options = [ReconOptions(max_iter=TV_ITERATIONS, tol=0.0, sigma=sigma)]

    def run() -> None:
        engine.reconstruct(model, op.kernel, yg, params, norms, options)

    row: dict[str, Any] = {"size": size, "pixels": size * size,
                           **stats(_timed(run, budget_s, max_repeats))}
    if model == "tv":
        row["ms_per_iteration"] = round(row["median_ms"] / TV_ITERATIONS, 4)
    return row


def series(quick: bool) -> tuple[list[tuple[str, str, tuple[int, ...]]], list[str]]:
    """(model, family, sizes) to measure, and notes on learned models."""
    if quick:
        return [("pinv", "denoising", (32, 64)), ("tv", "denoising", (32, 64))], []
    items = [(m, f, CT_SIZES if f == "ct" else SIZES)
             for f in FAMILIES for m in ("pinv", "tv")]
    notes = [f"CT stops at {CT_SIZES[-1]}x{CT_SIZES[-1]}: it is the slow family "
             f"(sparse projector gathers)"]
    learned = learned_cards()
    if not learned:
        notes.append("no learned model in models/zoo/cards/ yet")
    for card in learned:
        shape = (card.raw.get("constraints") or {}).get("shape")
        families = [f for f in card.families if f in FAMILIES]
        if shape is not None:
            notes.append(f"{card.id}: its card fixes the shape to {shape}; not scaled")
            continue
        for family in families:
            items.append((card.id, family, CT_SIZES if family == "ct" else SIZES))
        notes.append(f"{card.id}: any shape (card constraint shape null), scaled on {families}")
    return items, notes


def markdown(result: dict[str, Any]) -> str:
    sizes = sorted({r["size"] for s in result["series"] for r in s["rows"]})
    rows = []
    for s in result["series"]:
        by = {r["size"]: r for r in s["rows"]}
        rows.append([s["model"], s["family"],
                     *[fmt(by[n]["median_ms"]) if n in by else "-" for n in sizes],
                     fmt(s["exponent"])])
    header = ["model", "family", *[f"{n}x{n} ms" for n in sizes], "exponent b (ms ∝ pixels^b)"]
    return (
        f"Median latency of one `Engine.reconstruct` call, in-process (compute only, score off); "
        f"TV runs exactly {TV_ITERATIONS} PDHG iterations at every size.\n\n"
        + md_table(header, rows) + "".join(f"\n- {n}" for n in result["notes"]) + "\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="denoising at 32 and 64 only")
    parser.add_argument("--out", help="results folder (default bench/results[/quick])")
    args = parser.parse_args(argv)
    budget_s, max_repeats = (0.2, 3) if args.quick else (3.0, 30)
    engine = shared_engine()
    items, notes = series(args.quick)
    out_series = []
    for model, family, sizes in items:
        rows = []
        for size in sizes:
            row = measure(engine, model, family, size, budget_s, max_repeats)
            rows.append(row)
            print(f"{model:16s} {family:11s} {size:4d}x{size:<4d} {row['median_ms']:10.2f} ms",
                  flush=True)
        b = exponent([r["pixels"] for r in rows], [r["median_ms"] for r in rows])
        print(f"{model:16s} {family:11s} exponent {b}", flush=True)
        out_series.append({"model": model, "family": family, "operator": FAMILIES[family][0](0),
                           "rows": rows, "exponent": b})
    result = {"meta": machine(), "tv_iterations": TV_ITERATIONS, "series": out_series,
              "notes": notes}
    write_results(results_dir(args.out, args.quick), "scaling", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
