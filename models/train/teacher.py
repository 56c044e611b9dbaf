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

TV takes ~190 PDHG iterations per CT image (about a second on one CPU thread), so the
targets are computed once, for ``recipe.teacher_batches`` batches of the run's training
stream (their operators and noise drawn as the training loop draws them), and
kept in the run directory (``teacher.npz``: measurements, targets and operator specs;
no clean image); the teacher steps then revisit these batches in a seeded order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.physics.operators import Physics

__all__ = ["TeacherSet", "teacher_set"]


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
    from models.export import ZOO
    from service.engine import Engine
    from service.zoo import Zoo

    engine = Engine(Zoo.load(ZOO), "auto")
    teacher = TeacherSet([], [], [])
    stream = measurements()
    for k in range(batches):
        y, spec, sigma = next(stream)
        teacher.y.append(y.cpu())
        teacher.target.append(torch.from_numpy(_tv(engine, spec, y.cpu().numpy(), sigma)))
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


def _tv(engine: Any, spec: dict[str, Any], y: np.ndarray, sigma: float) -> np.ndarray:
    """The service's TV reconstruction of a batch, at its automatic λ for ``sigma``."""
    from service.engine import ReconOptions

    op = Physics.from_json(spec).compiled
    params = {k: np.repeat(v[None], len(y), axis=0) for k, v in op.params.items()}
    norms = np.full(len(y), op.norm, np.float32)
    options = [ReconOptions(sigma=sigma)] * len(y)
    return np.asarray(engine.reconstruct("tv", op.kernel, y, params, norms, options).x, np.float32)
