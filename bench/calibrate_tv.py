"""Calibrate the automatic TV weight: κ in λ = κ σ/‖A‖, per kernel.

For every validation problem (on calibration images that the quality table
does not use: the coins/moon photos and a seeded random-ellipse phantom), sweep
κ over a log grid, reconstruct with TV at λ = κ σ/‖A‖ and keep the κ with the
best mean PSNR. Prints a table; the chosen values go into
``service/engine.py`` ``LAMBDA_PER_SIGMA``.

    python -m bench.calibrate_tv [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from bench.problems import PROBLEMS, psnr, validation_image
from service.engine import Engine, ReconOptions
from service.operators.compile import compile_operator
from service.operators.spec import Operator
from service.zoo import Zoo

GRID = [0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"


def ellipse_phantom(size: int, seed: int) -> np.ndarray:
    """Random ellipses inside the inscribed circle, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:size, :size] - size / 2) / (size / 2)
    img = np.zeros((size, size))
    for _ in range(8):
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        a, b = rng.uniform(0.1, 0.4, 2)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        img[(u / a) ** 2 + (v / b) ** 2 <= 1] += rng.uniform(0.2, 0.6)
    img[xx**2 + yy**2 > 0.95] = 0
    return (img / img.max()).astype(np.float32)


def calibration_images(kind: str, size: int) -> list[np.ndarray]:
    if kind == "shepp_logan":
        return [ellipse_phantom(size, s) for s in (1, 2)]
    return [validation_image(n, size) for n in ("coins", "moon")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one problem, three κ values")
    args = parser.parse_args(argv)
    engine = Engine(Zoo.load(ZOO), "cpu")
    adapter = TypeAdapter(Operator)
    grid = [0.5, 1.0, 2.0] if args.quick else GRID
    problems = list(PROBLEMS.items())[:1] if args.quick else list(PROBLEMS.items())
    out = {}
    for label, (spec, sigma, image_kind) in problems:
        op = compile_operator(adapter.validate_python(spec))
        images = calibration_images(image_kind, op.image_shape[0])
        params = {k: v[None] for k, v in op.params.items()}
        scores = []
        t0 = time.perf_counter()
        for kappa in grid:
            values = []
            for i, img in enumerate(images):
                y = engine.forward(op.kernel, img[None], params)
                y = y + sigma * np.random.default_rng(i).standard_normal(y.shape).astype(np.float32)
                lam = kappa * sigma / op.norm
                res = engine.reconstruct(
                    "tv", op.kernel, y, params, np.array([op.norm]), [ReconOptions(lam=lam)]
                )
                values.append(psnr(res.x[0], img))
            scores.append(float(np.mean(values)))
        best = int(np.argmax(scores))
        out[label] = {
            "kernel": op.kernel,
            "kappa": grid[best],
            "psnr": scores,
            "grid": grid,
            "seconds": time.perf_counter() - t0,
        }
        row = " ".join(f"{s:6.2f}" for s in scores)
        print(f"{label:40s} {op.kernel:15s} best κ={grid[best]:<7} {row}", flush=True)
    path = Path(__file__).parent / "results" / "calibrate_tv.json"
    if not args.quick:
        path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
