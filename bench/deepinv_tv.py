"""deepinv's TV prior under FISTA and PGD, traced for bench/tv_compare.py.

Runs in the optional deepinv environment only (torch 2.14.1 + torchvision
0.29.1 + deepinv, see bench/README.md): it imports torch, deepinv and numpy,
never ``service`` or ``bench.common``. ``bench/tv_compare.py`` writes a job
folder (``job.json`` and the ground truth ``truth.npy``, plus ``mask.npy`` for
inpainting), runs ``PYTHON -m bench.deepinv_tv JOB_DIR`` and reads
``JOB_DIR/result.json``.

The measurements are simulated with deepinv's own physics (same image, mask
or view angles, noise level and seed), and every solver minimises the same
objective as our TV, ``1/2 ‖Ax − y‖² + λ' TV(x)`` with ``λ' = λ ‖A‖²`` (our λ
weights the data term by ``1/‖A‖²``). FISTA and PGD use step ``1/‖A‖²`` and
``TVPrior.prox`` (deepinv's ``TVDenoiser``, its default inner solver settings);
denoising calls ``TVDenoiser`` directly with ``n_it_max`` iterations. Each
iteration is timed without the PSNR bookkeeping.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _psnr(x: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float(torch.mean((x.double() - truth.double()) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-30))


def _within(trace: list[tuple[float, float]], margin: float = 0.1) -> dict[str, Any]:
    """Time to reach ``best - margin`` dB along a (cumulative seconds, PSNR) trace."""
    best = max(p for _, p in trace)
    for i, (t, p) in enumerate(trace):
        if p >= best - margin:
            return {"best_psnr_db": round(best, 3), "iterations": i + 1,
                    "time_to_within_ms": round(1e3 * t, 3)}
    raise AssertionError("unreachable: the best point is within its own margin")


def _physics(job: dict[str, Any], folder: Path) -> Any:
    import deepinv as dinv

    size = job["size"]
    if job["family"] == "inpainting":
        mask = torch.from_numpy(np.load(folder / "mask.npy", allow_pickle=False)).float()
        return dinv.physics.Inpainting((1, size, size), mask=mask[None, None])
    if job["family"] == "ct":
        angles = torch.tensor(job["angles"], dtype=torch.float32)
        return dinv.physics.Tomography(angles=angles, img_width=size, circle=True)
    return dinv.physics.Denoising()


def _solve(
    physics: Any, y: torch.Tensor, truth: torch.Tensor, lam: float, lipschitz: float,
    iterations: int, accelerated: bool,
) -> list[tuple[float, float]]:
    from deepinv.optim.prior import TVPrior

    prior = TVPrior()
    step = 1.0 / lipschitz
    x = physics.A_adjoint(y) * step
    z, t = x.clone(), 1.0
    elapsed, trace = 0.0, []
    with torch.no_grad():
        for _ in range(iterations):
            t0 = time.perf_counter()
            grad = physics.A_adjoint(physics.A(z) - y)
            x_new = prior.prox(z - step * grad, gamma=step * lam)
            if accelerated:
                t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
                z = x_new + ((t - 1.0) / t_new) * (x_new - x)
                t = t_new
            else:
                z = x_new
            x = x_new
            elapsed += time.perf_counter() - t0
            trace.append((elapsed, _psnr(x, truth)))
    return trace


def _denoise(
    y: torch.Tensor, truth: torch.Tensor, lam: float, schedule: list[int]
) -> list[tuple[float, float]]:
    from deepinv.models import TVDenoiser

    trace = []
    with torch.no_grad():
        for n in schedule:
            model = TVDenoiser(crit=1e-12, n_it_max=n)
            t0 = time.perf_counter()
            x = model(y, ths=lam)
            trace.append((time.perf_counter() - t0, _psnr(x, truth)))
    return trace


def run(folder: Path) -> dict[str, Any]:
    import deepinv as dinv

    job = json.loads((folder / "job.json").read_text())
    torch.set_grad_enabled(False)
    truth = torch.from_numpy(np.load(folder / "truth.npy", allow_pickle=False)).float()[None, None]
    physics = _physics(job, folder)
    try:
        lipschitz = float(physics.compute_norm(torch.rand_like(truth), verbose=False))
    except TypeError:  # releases without the verbose flag
        lipschitz = float(physics.compute_norm(torch.rand_like(truth)))
    # The same problem as ours: deepinv's operator is ours scaled by sqrt(lipschitz)/‖A‖
    # (its Tomography is normalised), so the noise scales with it. Then
    # ½‖A_d x - y_d‖² is our 1/(2‖A‖²)‖A x - y‖² and the weights λ carry over as they are.
    scale = math.sqrt(lipschitz) / job.get("norm", math.sqrt(lipschitz))
    gen = torch.Generator().manual_seed(job["seed"])
    clean = physics.A(truth)
    y = clean + scale * job["sigma"] * torch.randn(clean.shape, generator=gen)
    if job["family"] == "inpainting":
        y = physics.A(y)  # no noise off the mask, as in our simulation
    out: dict[str, Any] = {"deepinv": dinv.__version__, "torch": torch.__version__,
                           "operator_norm_squared": lipschitz, "solvers": {}}
    grid = [job["lam"] * lipschitz * f for f in job["lam_factors"]]
    if job["family"] == "denoising":
        runs = {lam: _denoise(y, truth, lam, job["denoise_schedule"]) for lam in grid}
        lam = max(runs, key=lambda k: max(p for _, p in runs[k]))
        trace = runs[lam]
        best = _within(trace)
        n = job["denoise_schedule"][best["iterations"] - 1]
        best.update(iterations=n, lam=lam, ms_per_iteration=round(1e3 * trace[-1][0]
                                                                  / job["denoise_schedule"][-1], 4))
        out["solvers"]["TVDenoiser"] = best
        return out
    for name, accelerated in (("FISTA", True), ("PGD", False)):
        runs = {
            lam: _solve(physics, y, truth, lam, lipschitz, job["iterations"], accelerated)
            for lam in grid
        }
        lam = max(runs, key=lambda k: max(p for _, p in runs[k]))
        trace = runs[lam]
        best = _within(trace)
        best.update(lam=lam, ms_per_iteration=round(1e3 * trace[-1][0] / len(trace), 4))
        out["solvers"][name] = best
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0])
    (folder / "result.json").write_text(json.dumps(run(folder), indent=2) + "\n")


if __name__ == "__main__":
    main()
