"""Run one micro-batch: reconstruct, then score (DESIGN.md §7-8).

Every task of a batch shares the model, the graph family and all input
shapes, so measurements and operator tensors stack on a leading batch axis.
After ``x̂ = f(y)``, one ``Engine.forward`` pass computes ``A x̂`` (data
consistency) together with every ``A T_g x̂``, and one ``Engine.reconstruct``
pass computes every ``x̃_g = f(A T_g x̂)`` with each request's own options (an
automatic TV λ is pinned to the value chosen for ``x̂``, so ``f`` is one function).
The evaluations are packed request by request, so one request's set ``S``
always runs as one batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from service import equivariance as eq
from service.engine import Engine, ReconOptions, take_rows
from service.operators.compile import CompiledOperator

__all__ = ["EquivarianceResult", "Outcome", "Task", "batch_key", "run_batch"]


@dataclass(frozen=True)
class Task:
    """A validated request, ready to stack: operator tensors, graph-layout y, options, set S."""

    model: str
    op: CompiledOperator
    y: np.ndarray = field(repr=False)  # [*op.graph_measurement_shape] float32
    options: ReconOptions
    group: str | None = None  # None: no equivariance score
    transforms: tuple[eq.Transform, ...] = ()
    want_map: bool = False


@dataclass(frozen=True)
class EquivarianceResult:
    score: float
    score_db: float
    group: str
    transforms: int
    map: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """What one request gets back."""

    image: np.ndarray = field(repr=False)  # [H, W] float32
    iterations: int
    data_consistency: float
    equivariance: EquivarianceResult | None
    compute_ms: float


def batch_key(task: Task) -> Hashable:
    """Tasks with equal keys stack: model, kernel, image and measurement shapes, param shapes."""
    op = task.op
    params = tuple(sorted((k, v.shape, v.dtype.str) for k, v in op.params.items()))
    return (task.model, op.kernel, op.image_shape, op.graph_measurement_shape, params)


def _stack(ops: Sequence[CompiledOperator]) -> dict[str, np.ndarray]:
    """Operator tensors on a leading batch axis: of length 1 when every task has the same
    operator (compiled operators are cached by spec), which the engine then shares."""
    if all(op is ops[0] for op in ops):
        return {k: v[None] for k, v in ops[0].params.items()}
    return {k: np.stack([op.params[k] for op in ops]) for k in ops[0].params}


def _norm(v: np.ndarray) -> float:
    # einsum, not np.linalg.norm: BLAS would wake its thread pool for one small dot product,
    # which cost more than the product on 2 cores shared with onnxruntime and the API.
    flat = v.astype(np.float64).ravel()
    return math.sqrt(float(np.einsum("i,i->", flat, flat)))


def _pack(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Greedy groups of consecutive task indices whose sizes sum to at most ``limit``."""
    groups: list[list[int]] = []
    total = limit
    for i, size in enumerate(sizes):
        if total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def run_batch(engine: Engine, tasks: Sequence[Task], max_batch: int = 8) -> list[Outcome]:
    """Reconstruct and score a same-key batch; one :class:`Outcome` per task."""
    start = time.perf_counter()
    first = tasks[0]
    kernel = first.op.kernel
    params = _stack([t.op for t in tasks])
    norms = np.array([t.op.norm for t in tasks], dtype=np.float32)
    y = np.stack([t.y for t in tasks]).astype(np.float32)
    out = engine.reconstruct(first.model, kernel, y, params, norms, [t.options for t in tasks])
    x_hat = np.asarray(out.x, dtype=np.float32)
    if not np.all(np.isfinite(x_hat)):
        raise FloatingPointError("the model produced non-finite values")  # fails each alone

    # The evaluations must run the same reconstructor f: pin an automatic λ to the value
    # x̂ used (otherwise it would be re-derived from each A T_g x̂).
    same_f = [
        replace(t.options, lam=float(out.lam[i])) if t.options.lam is None and out.lam[i] > 0
        else t.options
        for i, t in enumerate(tasks)
    ]

    # Second pass, packed so that the evaluations of one request share an engine call.
    sizes = [1 + len(t.transforms) for t in tasks]
    limit = max(max_batch, *sizes)
    consistency: list[float] = [0.0] * len(tasks)
    tilde: list[np.ndarray | None] = [None] * len(tasks)
    for group in _pack(sizes, limit):
        images, owner = [], []
        for i in group:
            images += [x_hat[i], *(g.apply(x_hat[i]) for g in tasks[i].transforms)]
            owner += [i] * sizes[i]
        rows = np.array(owner)
        a_x = engine.forward(kernel, np.stack(images), take_rows(params, rows))
        offset, evals = 0, list[int]()
        for i in group:
            consistency[i] = _norm(a_x[offset] - y[i]) / max(_norm(y[i]), 1e-30)
            evals += range(offset + 1, offset + sizes[i])
            offset += sizes[i]
        if evals:
            idx = np.array(evals)
            who = rows[idx]
            rec = engine.reconstruct(
                first.model, kernel, a_x[idx].astype(np.float32),
                take_rows(params, who), norms[who],
                [same_f[i] for i in who],
            ).x
            offset = 0
            for i in group:
                tilde[i] = rec[offset : offset + len(tasks[i].transforms)]
                offset += len(tasks[i].transforms)

    compute_ms = 1e3 * (time.perf_counter() - start)
    outcomes = []
    for i, task in enumerate(tasks):
        score = None
        xt = tilde[i]
        if task.group is not None and xt is not None:
            s = list(task.transforms)
            value = eq.score(x_hat[i], xt, s)
            score = EquivarianceResult(
                value, eq.score_db(value), task.group, len(s),
                eq.error_map(x_hat[i], xt, s) if task.want_map else None,
            )
        outcomes.append(
            Outcome(x_hat[i], int(out.iterations[i]), consistency[i], score, compute_ms)
        )
    return outcomes
