"""Export the model-based reconstructions to ONNX graphs in ``models/zoo``.

``python -m models.export`` (or ``make export``) writes, for every kernel of
``docs/architecture.md``, four graphs (forward, adjoint, pinv, one TV block),
the model cards of the ``adjoint``, ``pinv`` and ``tv`` models, and
``manifest.json`` with the sha256 of every file. Export is deterministic:
running it twice gives byte-identical files (a test checks one graph).

Every axis except the (re, im) axes is dynamic (``Dim.AUTO``), so one graph
serves every image size, batch size and parameter value of its family.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.export import Dim

from models.physics import functional
from models.physics.operators import OPERATORS, Physics
from models.recon.tv import tv_block, tv_init

__all__ = [
    "ROLES",
    "ZOO",
    "export_graph",
    "export_module",
    "export_zoo",
    "graph_inputs",
    "run_graph",
    "write_manifest",
]

ZOO = Path(__file__).resolve().parent / "zoo"
ROLES = ("forward", "adjoint", "pinv", "tv")
OPSET = 20
#: Inputs whose axis 1 is the (re, im) axis and so stays static.
_COMPLEX_PARAMS = {"otf", "dft_h", "dft_w", "coils"}
_COMPLEX_KERNELS = {"mri", "mri_multicoil"}
#: Graph inputs that are state or scalars, not operator parameters.
_STATE_INPUTS = {"x", "xbar", "p", "q", "y", "inv_norm", "lam", "lower", "ratio"}
BATCH = 3


def run_graph(
    role: str, kernel: str, inputs: dict[str, torch.Tensor]
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """What the graph ``{kernel}.{role}`` computes, on its inputs by name (state, operator
    parameters, TV scalars): the export traces this, and models.train.teacher runs it in
    torch for the service's TV loop."""
    params = {k: v for k, v in inputs.items() if k not in _STATE_INPUTS}
    if role == "forward":
        return functional.forward(kernel, inputs["x"], params)
    if role == "adjoint":
        return functional.adjoint(kernel, inputs["y"], params)
    if role == "pinv":
        return functional.pinv(kernel, inputs["y"], params)
    x, xbar, p, q, y = (inputs[k] for k in ("x", "xbar", "p", "q", "y"))
    inv_norm, lam, lower, ratio = (inputs[k] for k in ("inv_norm", "lam", "lower", "ratio"))
    return tv_block(kernel, x, xbar, p, q, y, params, inv_norm, lam, lower, ratio)


class _Graph(torch.nn.Module):
    """Adapts :func:`run_graph` to positional ONNX inputs named ``names``."""

    def __init__(self, role: str, kernel: str, names: list[str]) -> None:
        super().__init__()
        self.role, self.kernel, self.names = role, kernel, names

    def forward(self, *inputs: torch.Tensor):
        return run_graph(self.role, self.kernel, dict(zip(self.names, inputs, strict=True)))


def graph_inputs(role: str, kernel: str) -> tuple[list[str], list[torch.Tensor], list[str]]:
    """Example inputs (names, tensors) and output names of one graph, from ``OPERATORS``."""
    physics = Physics.from_json(OPERATORS[kernel])
    params = physics.params(BATCH)
    gen = torch.Generator().manual_seed(0)
    h, w = physics.compiled.image_shape
    x = torch.rand(BATCH, h, w, generator=gen)
    y = physics.A(x)
    names = sorted(params)
    tensors = [params[n] for n in names]
    if role == "forward":
        return ["x", *names], [x, *tensors], ["y"]
    if role in ("adjoint", "pinv"):
        return ["y", *names], [y, *tensors], ["x"]
    # Every state input gets its own values: the exporter merges inputs that are the
    # same tensor (tv_init's x and xbar are), and the graph then reads one for the other.
    x0 = physics.A_adjoint(y).clone()
    _, _, p0, q0 = tv_init(x0, y)
    state = [
        x0,
        x0 + 0.1 * torch.rand(x0.shape, generator=gen),
        p0 + 0.01 * torch.randn(p0.shape, generator=gen),
        q0 + 0.01 * torch.randn(q0.shape, generator=gen),
    ]
    extra = [torch.full((BATCH,), v) for v in (0.04, 0.01, 0.0, 2.0)]
    return (
        ["x", "xbar", "p", "q", "y", *names, "inv_norm", "lam", "lower", "ratio"],
        [*state, y, *tensors, *extra],
        ["x_out", "xbar_out", "p_out", "q_out", "delta"],
    )


def _dynamic_shapes(kernel: str, names: list[str], tensors: list[torch.Tensor]):
    shapes = []
    for name, t in zip(names, tensors, strict=True):
        static = name in _COMPLEX_PARAMS or (kernel in _COMPLEX_KERNELS and name in ("y", "q"))
        shapes.append({i: Dim.AUTO for i in range(t.dim()) if not (static and i == 1)})
    return tuple(shapes)


def export_graph(role: str, kernel: str, path: Path) -> None:
    """Export one graph deterministically to ``path``."""
    names, tensors, outputs = graph_inputs(role, kernel)
    export_module(_Graph(role, kernel, names), kernel, names, tensors, outputs, path)


def export_module(
    module: torch.nn.Module,
    kernel: str,
    names: list[str],
    tensors: list[torch.Tensor],
    outputs: list[str],
    path: Path,
    optimize: bool = True,
) -> None:
    """Export ``module(*tensors)`` with every axis dynamic (but (re, im)) to ``path``;
    ``optimize``: run onnxscript's graph optimiser on it (see ``export_learned``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            tuple(tensors),
            input_names=names,
            output_names=outputs,
            dynamic_shapes=(_dynamic_shapes(kernel, names, tensors),),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            optimize=optimize,
        )
    assert program is not None
    model = program.model_proto
    _strip_provenance(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def _strip_provenance(model: onnx.ModelProto) -> None:
    """Drop debug metadata (module paths, source lines): output must not depend on the caller."""
    model.doc_string = ""
    del model.metadata_props[:]
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        del graph.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            graphs.extend(a.g for a in node.attribute if a.HasField("g"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_zoo(
    zoo: Path = ZOO, kernels: list[str] | None = None, log: Callable[[str], None] = print
) -> None:
    """Export every graph, then write the cards and the manifest."""
    from models.cards import write_cards

    graphs = zoo / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    for kernel in kernels or list(OPERATORS):
        for role in ROLES:
            path = graphs / f"{kernel}.{role}.onnx"
            export_graph(role, kernel, path)
            log(f"exported {path.relative_to(zoo)} ({path.stat().st_size} bytes)")
    write_cards(zoo)
    write_manifest(zoo)


def write_manifest(zoo: Path = ZOO) -> dict[str, Any]:
    """``manifest.json``: every graph and card with its sha256 and size."""
    files = sorted(p for p in zoo.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "format": 1,
        "files": {
            str(p.relative_to(zoo)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in files
        },
    }
    (zoo / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ZOO)
    parser.add_argument("--kernel", action="append", help="export only these kernels")
    args = parser.parse_args(argv)
    logging.getLogger("torch").setLevel(logging.ERROR)
    export_zoo(args.zoo, args.kernel)


if __name__ == "__main__":
    main()
