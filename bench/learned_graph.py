"""What the final TV step costs a learned graph, with and without onnxscript's optimiser.

For the ``inpainting-ei`` network (untrained weights: the cost does not depend on
them), with and without the final TV proximal step (``--tv-weight``,
``models.nets.unrolled``), exported with and without ``torch.onnx.export``'s
graph optimiser, this prints the export time, the node count, and the median
onnxruntime latency of a 128x128 reconstruction (batch 1 and 8, one thread: the
worker's per-request cost; the served score with D4 is the batch-8 figure).
``models.export_learned`` keeps the optimiser for these plain graphs and skips it for
the D4-averaged ones (eight copies of the network). Training side (needs torch); not
part of ``make bench``.

    python -m bench.learned_graph [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.common import fmt, md_table, results_dir, session_median_ms, write_results
from models.export import export_module
from models.export_learned import LearnedGraph, learned_inputs
from models.train.loop import build_network
from models.train.recipes import RECIPES

RECIPE = "inpainting-ei"


def _latency(path: Path, feed: dict[str, np.ndarray], batch: int, repeats: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {k: np.repeat(v[:1], batch, axis=0) for k, v in feed.items()}
    return session_median_ms(session, inputs, repeats)


def measure(repeats: int, optimise_tv: bool) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tv_weight in (0.0, 0.01):
            recipe = dataclasses.replace(RECIPES[RECIPE], tv_weight=tv_weight)
            net = build_network(recipe, "inpainting").eval()
            names, tensors = learned_inputs(recipe)
            feed = {n: t.numpy() for n, t in zip(names, tensors, strict=True)}
            for optimize in (True, False):
                if optimize and tv_weight and not optimise_tv:
                    continue  # the slowest export (~20 s); the full run measures it
                path = Path(tmp) / f"{tv_weight}-{optimize}.onnx"
                began = time.perf_counter()
                export_module(LearnedGraph(net, names[1:-1]), "inpainting", names, tensors,
                              ["x"], path, optimize=optimize)
                rows.append({
                    "tv_step": bool(tv_weight),
                    "optimised": optimize,
                    "export_s": round(time.perf_counter() - began, 1),
                    "nodes": len(onnx.load(str(path)).graph.node),
                    "batch1_ms": round(_latency(path, feed, 1, repeats), 1),
                    "batch8_ms": round(_latency(path, feed, 8, repeats), 1),
                })
                print(rows[-1], flush=True)
    return {"recipe": RECIPE, "size": 128, "threads": 1, "repeats": repeats, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.learned_graph")
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats, and no optimised export of the TV step")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = measure(3 if args.quick else 20, optimise_tv=not args.quick)
    table = md_table(
        ["final TV step", "onnxscript optimiser", "export s", "nodes", "batch 1 ms",
         "batch 8 ms"],
        [
            ["yes" if r["tv_step"] else "no", "on" if r["optimised"] else "off",
             fmt(r["export_s"], 1), r["nodes"], fmt(r["batch1_ms"], 1), fmt(r["batch8_ms"], 1)]
            for r in result["rows"]
        ],
    )
    print(table)
    write_results(results_dir(args.out, args.quick), "learned_graph", result,
                  "# Learned graph: export and latency (128x128 inpainting, 1 thread)\n\n" + table)
    return result


if __name__ == "__main__":
    main()
