"""Export: every shipped graph agrees with torch; export is deterministic; hashes hold."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.export import _STATE_INPUTS as _STATE
from models.export import ROLES, ZOO, export_graph, graph_inputs, run_graph
from models.physics.operators import OPERATORS
from service.zoo import Zoo, ZooError

GRAPHS = [(k, r) for k in OPERATORS for r in ROLES]



@pytest.mark.parametrize(("kernel", "role"), GRAPHS)
def test_shipped_graph_matches_torch(kernel: str, role: str) -> None:
    names, tensors, _ = graph_inputs(role, kernel)
    session = ort.InferenceSession(
        str(ZOO / "graphs" / f"{kernel}.{role}.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)})
    with torch.no_grad():
        want = run_graph(role, kernel, dict(zip(names, tensors, strict=True)))
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        scale = max(float(np.abs(w).max()), 1.0)
        assert float(np.abs(g - w).max()) <= 1e-4 * scale, f"{kernel}.{role}"


@pytest.mark.parametrize(("kernel", "role"), GRAPHS)
def test_shipped_graph_reads_every_state_input(kernel: str, role: str) -> None:
    """A state input no node reads is a traced alias: the TV graphs once read ``xbar``
    for ``x`` (and denoising ``y`` for both) because the example state shared one tensor.
    (Operator parameters may go unread: a family's roles share one parameter set.)"""
    import onnx

    graph = onnx.load(str(ZOO / "graphs" / f"{kernel}.{role}.onnx")).graph
    read = {name for node in graph.node for name in node.input}
    assert [i.name for i in graph.input if i.name in _STATE and i.name not in read] == []


def test_export_is_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "inpainting.pinv.onnx"
    export_graph("pinv", "inpainting", path)
    manifest = json.loads((ZOO / "manifest.json").read_text())
    shipped = manifest["files"]["graphs/inpainting.pinv.onnx"]["sha256"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == shipped


def test_manifest_covers_every_graph_and_loads() -> None:
    zoo = Zoo.load(ZOO)
    for kernel, role in GRAPHS:
        assert f"graphs/{kernel}.{role}.onnx" in zoo.files
    assert {"adjoint", "pinv", "tv"} <= set(zoo.cards)


def test_tampered_graph_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "zoo"
    shutil.copytree(ZOO, copy)
    graph = copy / "graphs" / "denoising.forward.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ZooError, match="sha256"):
        Zoo.load(copy)
