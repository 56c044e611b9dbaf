r"""The TV teacher: a warm start for EI training that needs no ground truth.

``--loss tv-teacher`` trains the network to reproduce the service's own TV
reconstruction of each training measurement,

.. math::
    \min_\theta \; \mathbb E_y \, \| f_\theta(y) - \mathrm{TV}(y) \|^2 ,

which is a function of the measurement alone (the automatic :math:`\lambda` of the
recipe's noise, ``service.engine.choose_lambda``), so the run stays ground-truth free.
An EI run started from its weights (``--loss rei --init RUN/weights.npz``: a fresh
optimiser, as the teacher's Adam moments do not fit the EI loss) then starts near TV
instead of at :math:`A^\dagger y`.

Why: on CT's phantoms the EI objective scores TV's reconstructions better than any
trained network (SURE + EI over rotations on 8 validation measurements: TV
3.8e-5, the supervised net 6.5e-5, the EI net 1.05e-4; docs/training-log.md, "CT: a TV teacher"),
and EI training from :math:`A^\dagger y` stopped ~2 dB below TV. Regressing onto TV
is an ordinary supervised-style fit, far faster to train than EI (one pass per step
instead of three), so the network reaches TV's neighbourhood in minutes.

TV takes ~190 PDHG iterations per CT image, so the targets are computed once, for
``recipe.teacher_batches`` batches of the run's training stream (their operators and
noise drawn as the training loop draws them), and kept in the run directory
(``teacher.npz``: measurements, targets and operator specs; no clean image); the
teacher steps then revisit these batches in a seeded order. They are computed by the
service's own TV loop on the torch functions its graphs were exported from
(:func:`service_tv`): for CT 11x faster than through onnxruntime on 2 CPU cores,
the same images to float error (``python -m bench.teacher_tv``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.export import ZOO, run_graph
from models.physics.operators import Physics
from service.engine import Engine, ReconOptions
from service.zoo import Zoo

__all__ = ["TeacherSet", "service_tv", "teacher_set"]


@dataclass
class TeacherSet:
    """``y[k]``, a batch of measurements through the operator of ``specs[k]``, and
    ``target[k] = TV(y[k])``."""

    y: list[torch.Tensor]
    target: list[torch.Tensor]
    specs: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.y)


Measured = tuple[torch.Tensor, dict[str, Any], float]  # y, operator spec, noise σ


def teacher_set(
    measurements: Callable[[], Iterator[Measured]],
    path: Path,
    batches: int,
    log: Callable[[str], None] = print,
) -> TeacherSet:
    """TV targets for the first ``batches`` of ``measurements()``, cached in ``path``: a
    resumed run reads them back instead of running TV again."""
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            specs = json.loads(str(data["specs"]))
            cached = TeacherSet(
                [torch.from_numpy(data[f"y/{k}"]) for k in range(len(specs))],
                [torch.from_numpy(data[f"target/{k}"]) for k in range(len(specs))],
                specs,
            )
        log(f"TV teacher: {len(specs)} batches from {path}")
        return cached
    from models.train.loop import physics_for  # here: the loop imports this module

    teacher = TeacherSet([], [], [])
    stream = measurements()
    for k in range(batches):
        y, spec, sigma = next(stream)
        teacher.y.append(y.cpu())
        # The training loop's cached operator: CT's CSR matrix is built once for both.
        op = physics_for(spec)
        teacher.target.append(torch.from_numpy(service_tv(op, y.cpu().numpy(), sigma)))
        teacher.specs.append(spec)
        if k == 0 or (k + 1) % 16 == 0:
            log(f"TV teacher: {k + 1}/{batches} batches")
    arrays: dict[str, Any] = {f"y/{k}": v.numpy() for k, v in enumerate(teacher.y)}
    arrays |= {f"target/{k}": v.numpy() for k, v in enumerate(teacher.target)}
    arrays["specs"] = np.asarray(json.dumps(teacher.specs))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return teacher


def service_tv(
    op: Physics, y: np.ndarray, sigma: float, engine: Engine | None = None
) -> np.ndarray:
    """The service's TV reconstruction of a batch ``y`` through ``op``, at its automatic λ
    for ``sigma``: through ``engine``'s onnxruntime graphs or, by default, the teacher's
    torch engine (:class:`_TorchEngine`, the same loop and functions)."""
    if engine is None:
        params = op.params(len(y), sparse=True)
        engine = _TorchEngine(_zoo(), {k: params.pop(k) for k in _SHARED if k in params})
        feeds = {k: v.numpy() for k, v in params.items()}
    else:
        feeds = {k: np.repeat(v[None], len(y), axis=0) for k, v in op.compiled.params.items()}
    norms = np.full(len(y), op.compiled.norm, np.float32)
    options = [ReconOptions(sigma=sigma)] * len(y)
    return np.asarray(engine.reconstruct("tv", op.kernel, y, feeds, norms, options).x, np.float32)


#: Operator tensors that one sparse matrix holds for the whole batch (Physics.params).
_SHARED = ("fwd_csr", "adj_csr")


@functools.cache
def _zoo() -> Zoo:
    return Zoo.load(ZOO)


class _TorchEngine(Engine):
    """The service's engine (its TV loop: start, λ, step ratio, stopping rule) with each
    graph run as the torch function it was exported from (models.export.run_graph), not
    through onnxruntime: CT's matrix is then one sparse CSR product shared by the batch
    (``shared``) instead of the graph's padded-ELL gathers, 11x faster on 2 CPU cores
    (python -m bench.teacher_tv). MRI's TV costs the same either way, inpainting's ~10 ms
    an image more (10 s of a 30-minute run): one code path for every family. It runs on
    the CPU, also when training on CUDA: the targets are computed once (512 CT phantoms
    in ~50 s)."""

    def __init__(self, zoo: Zoo, shared: dict[str, torch.Tensor]) -> None:
        self.zoo = zoo  # its cards only: no onnxruntime sessions
        self._shared = shared

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        kernel, role = graph.split(".")
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()} | self._shared
        with torch.inference_mode():
            out = run_graph(role, kernel, inputs)
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
