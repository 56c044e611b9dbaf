"""What the TV teacher's targets cost: the service's TV loop through onnxruntime against
the same loop on the torch functions the graphs were exported from.

The EI recipes start from a TV teacher (``models.train.teacher``) that first computes
the service's TV reconstruction of ``teacher_batches`` training batches; for CT that
was a third of a 30-minute run (~1.1 s an image through the exported graph's padded-ELL
gathers). For each EI recipe this reconstructs one teacher batch both ways, the arms
interleaved in one process, and reports seconds per image, the speed-up and how far
apart the two reconstructions are (they must be the same images to float error).
Training side (needs torch); not part of ``make bench``.

    python -m bench.teacher_tv [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from bench.common import fmt, md_table, results_dir, stats, write_results
from models.export import ZOO
from models.train import loop, teacher
from models.train.recipes import RECIPES
from service.engine import Engine
from service.zoo import Zoo

EI_RECIPES = ("ct-ei", "mri-ei", "inpainting-ei")


def _row(name: str, engine: Engine, repeats: int, batch: int | None) -> dict[str, Any]:
    recipe = RECIPES[name]
    batch = batch or recipe.teacher_batch
    spec = loop.operator_spec(recipe, recipe.crop, 0 if recipe.vary else None)
    physics = loop.physics_for(spec)
    x = torch.rand(batch, recipe.crop, recipe.crop, generator=torch.Generator().manual_seed(0))
    sigma = float(recipe.sigma if isinstance(recipe.sigma, float) else max(recipe.sigma))
    clean = physics.A(x)
    y = (clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)))
    y_np = y.numpy()
    arms = {
        "onnxruntime": lambda: teacher.service_tv(physics, y_np, sigma, engine),
        "torch": lambda: teacher.service_tv(physics, y_np, sigma),
    }
    out = {arm: fn() for arm, fn in arms.items()}  # warm-up (sessions, CSR conversion)
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm, fn in arms.items():  # interleaved: both see the same machine
            began = time.perf_counter()
            fn()
            seconds[arm].append(time.perf_counter() - began)
    per_image = {arm: stats(s)["median_ms"] / 1e3 / batch for arm, s in seconds.items()}
    scale = float(np.abs(out["onnxruntime"]).max())
    return {
        "recipe": name, "batch": batch,
        "ort_s_per_image": round(per_image["onnxruntime"], 4),
        "torch_s_per_image": round(per_image["torch"], 4),
        "speedup": round(per_image["onnxruntime"] / per_image["torch"], 2),
        "max_rel_diff": float(np.abs(out["torch"] - out["onnxruntime"]).max() / scale),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.teacher_tv")
    parser.add_argument("--quick", action="store_true", help="batches of 2, one repeat")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    engine = Engine(Zoo.load(ZOO), "cpu")
    repeats, batch = (1, 2) if args.quick else (3, None)
    rows = []
    for name in EI_RECIPES:
        rows.append(_row(name, engine, repeats, batch))
        print(rows[-1], flush=True)
    result = {"threads": torch.get_num_threads(), "repeats": repeats, "rows": rows}
    table = md_table(
        ["recipe", "batch", "onnxruntime s/image", "torch s/image", "speed-up",
         "max rel. difference"],
        [
            [r["recipe"], r["batch"], fmt(r["ort_s_per_image"], 3),
             fmt(r["torch_s_per_image"], 3), fmt(r["speedup"]), f"{r['max_rel_diff']:.1e}"]
            for r in rows
        ],
    )
    print(table)
    write_results(
        results_dir(args.out, args.quick),
        "teacher_tv",
        result,
        f"# TV teacher targets ({result['threads']} threads, median of {repeats})\n\n" + table,
    )
    return result


if __name__ == "__main__":
    main()
