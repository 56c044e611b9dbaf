"""Where a scored CT request's onnxruntime time goes, and what CT's sparse product would
cost written another way.

The served score runs the network once more for each of its 7 transforms, as one batch
(``service.worker.run_batch``), each element with its own copy of the operator's
padded-ELL matrices (``docs/architecture.md``: every graph input has a leading batch
axis). This prints

(a) onnxruntime's own profile of the shipped ``ct-ei`` graph at that batch: the share of
    each operator type in the kernels' time (``Conv`` is the network's blocks;
    ``GatherElements``, ``Mul`` and ``ReduceSum`` together are ``A`` and ``Aᵀ``);
(b) ``A`` and ``Aᵀ`` alone at the same batch in three ONNX formulations, each checked
    against the first:

    - *per element* (what the graphs do): ``GatherElements`` of each image with its own
      index copy, times the weights, summed over the row's entries;
    - *one index, rows of vᵀ*: a single index shared by the batch gathers whole rows of
      the transposed batch (``Gather`` on axis 0), so the index is read once for all;
    - *one index, flat offsets*: the batch flattened and each element's index shifted by
      its offset (one ``Gather`` on a 1-D tensor; also accepts a per-element index).

Training side (needs torch); not part of ``make bench``.

    python -m bench.ct_graph [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from bench.common import ZOO, fmt, md_table, results_dir, session_median_ms, write_results
from models.export import OPSET
from models.export_learned import learned_inputs
from models.physics import functional
from models.train.recipes import RECIPES

MODEL = "ct-ei"
BATCH = 7  # the score's pass: one evaluation per transform of D4 but the identity


def _batched(feed: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.repeat(v[:1], batch, axis=0)) for k, v in feed.items()}


def profile(repeats: int) -> dict[str, Any]:
    """(a): the shipped graph's kernel time by operator type, and its latency."""
    names, tensors = learned_inputs(RECIPES[MODEL])
    feed = _batched({n: t.numpy() for n, t in zip(names, tensors, strict=True)}, BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ct")
        path = ZOO / "graphs" / "learned" / f"{MODEL}.onnx"
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        latency = session_median_ms(session, feed, repeats)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    runs = repeats + 1
    return {
        "batch_ms": round(latency, 1),
        "ops": [
            {"op": op, "share": round(us / total, 3), "ms_per_run": round(us / 1e3 / runs, 1)}
            for op, us in by_op.most_common(6)
        ],
    }


class _PerElement(torch.nn.Module):
    def forward(self, v: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return functional._ell_apply(v, index, weight)  # the graphs' own product


class _RowsOfTranspose(torch.nn.Module):
    def forward(self, v: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        gathered = v.transpose(0, 1)[index[0]]  # [R1, R2, K, B]
        return (gathered * weight[0].unsqueeze(-1)).sum(2).permute(2, 0, 1)


class _FlatOffsets(torch.nn.Module):
    def forward(self, v: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, size = v.shape
        offsets = (torch.arange(batch) * size).reshape(batch, 1, 1, 1)
        return (v.reshape(-1)[index + offsets] * weight).sum(-1)


FORMULATIONS: dict[str, tuple[torch.nn.Module, bool]] = {  # name -> (module, shared index)
    "per element (the graphs')": (_PerElement(), False),
    "one index, rows of vᵀ": (_RowsOfTranspose(), True),
    "one index, flat offsets": (_FlatOffsets(), True),
}


def products(repeats: int) -> list[dict[str, Any]]:
    """(b): ``A`` and ``Aᵀ`` at the score's batch in each formulation."""
    names, tensors = learned_inputs(RECIPES[MODEL])
    params = {n: t for n, t in zip(names, tensors, strict=True)}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for side, size in (
            ("fwd", params["adj_index"].shape[1:3].numel()),
            ("adj", params["fwd_index"].shape[1:3].numel()),
        ):
            index, weight = params[f"{side}_index"][:1], params[f"{side}_weight"][:1]
            v = torch.randn(BATCH, size, generator=torch.Generator().manual_seed(0))
            reference = None
            for name, (module, shared) in FORMULATIONS.items():
                idx, w = (
                    (index, weight)
                    if shared
                    else (
                        index.expand(BATCH, *index.shape[1:]).contiguous(),
                        weight.expand(BATCH, *weight.shape[1:]).contiguous(),
                    )
                )
                path = Path(tmp) / f"{side}-{len(rows)}.onnx"
                # As the zoo's graphs are exported (models.export), at this one shape.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    program = torch.onnx.export(
                        module,
                        (v, idx, w),
                        input_names=["v", "index", "weight"],
                        opset_version=OPSET,
                        dynamo=True,
                        verbose=False,
                    )
                assert program is not None
                onnx.save_model(program.model_proto, str(path))
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = {"v": v.numpy(), "index": idx.numpy(), "weight": w.numpy()}
                out = session.run(None, feed)[0]
                reference = out if reference is None else reference
                rows.append(
                    {
                        "product": "A" if side == "fwd" else "Aᵀ",
                        "formulation": name,
                        "ms": round(session_median_ms(session, feed, repeats), 2),
                        "max_diff": float(np.abs(out - reference).max() / np.abs(reference).max()),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.ct_graph")
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 20")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 20
    result: dict[str, Any] = {
        "model": MODEL,
        "batch": BATCH,
        "repeats": repeats,
        "profile": profile(repeats),
        "products": products(repeats),
    }
    prof = result["profile"]
    table_a = md_table(
        ["operator type", "share of kernel time", "ms per run"],
        [[r["op"], f"{100 * r['share']:.1f}%", fmt(r["ms_per_run"], 1)] for r in prof["ops"]],
    )
    table_b = md_table(
        ["product", "formulation", "ms", "max relative difference"],
        [
            [r["product"], r["formulation"], fmt(r["ms"], 2), f"{r['max_diff']:.1e}"]
            for r in result["products"]
        ],
    )
    text = (
        f"(a) `{MODEL}` at batch {BATCH} (the score's pass): {prof['batch_ms']} ms a run\n\n"
        f"{table_a}\n\n(b) CT's sparse product alone at batch {BATCH}\n\n{table_b}"
    )
    print(text)
    write_results(
        results_dir(args.out, args.quick),
        "ct_graph",
        result,
        "# CT graph: onnxruntime's time by operator, and the sparse product\n\n" + text,
    )
    return result


if __name__ == "__main__":
    main()
