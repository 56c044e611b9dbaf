"""The service's TV solver (the exported PDHG blocks driven by ``Engine``) converges."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine import RATIO_RANGE, Engine, ReconOptions, step_ratio
from service.operators.compile import compile_operator
from service.operators.spec import CT, UniformAngles, UniformAnglesSpec


def test_step_ratio_grows_as_the_dual_scale_shrinks() -> None:
    one = np.ones(3)
    lam = np.array([1e-1, 1e-3, 1e-5])
    ratio = step_ratio(40 * one, lam, 0.01 * one, one / 80, 64 * 64, 30 * 64)
    assert ratio[0] < ratio[1] < ratio[2]
    assert RATIO_RANGE[0] <= ratio.min() and ratio.max() <= RATIO_RANGE[1]


def test_ct_tv_converges_within_the_default_iteration_budget(real_engine: Engine) -> None:
    """CT's data term is small against the image (‖A‖ ~ 40): with equal primal and dual
    steps this solve was at 29.6 dB after 300 iterations and 37.5 dB after 1500 (51.1
    converged); the engine's step ratio is within 0.3 dB after 300 and stops early."""
    angles = UniformAngles(uniform=UniformAnglesSpec(count=30))
    op = compile_operator(CT(type="ct", shape=(64, 64), angles=angles))
    yy, xx = np.mgrid[:64, :64] - 31.5
    truth = ((yy / 20) ** 2 + (xx / 14) ** 2 <= 1).astype(np.float32)
    truth[24:40, 26:34] = 0.5
    params = {k: v[None] for k, v in op.params.items()}
    y = real_engine.forward("ct", truth[None], params)
    y = y + 0.05 * np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    norms = np.array([op.norm], np.float32)

    def solve(max_iter: int, tol: float) -> tuple[int, float]:
        options = [ReconOptions(sigma=0.05, max_iter=max_iter, tol=tol)]
        out = real_engine.reconstruct("tv", "ct", y, params, norms, options)
        return int(out.iterations[0]), float(10 * np.log10(1 / np.mean((out.x[0] - truth) ** 2)))

    (_, capped), (_, converged) = solve(300, 0.0), solve(1500, 0.0)
    assert abs(capped - converged) < 0.5
    assert solve(300, 1e-4)[0] < 300  # the default tolerance ends it before the cap


def test_a_batch_over_the_chunk_budget_gives_the_same_images(
    real_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large operators run in chunks (memory); the answer must not depend on it."""
    op = compile_operator(CT(type="ct", shape=(32, 32),
                             angles=UniformAngles(uniform=UniformAnglesSpec(count=12))))
    params = {k: np.repeat(v[None], 3, 0) for k, v in op.params.items()}
    truth = np.random.default_rng(1).random((3, 32, 32), dtype=np.float32)
    y = real_engine.forward("ct", truth, params)
    norms = np.full(3, op.norm, np.float32)
    options = [ReconOptions(sigma=s, max_iter=40, tol=t)
               for s, t in ((0.01, 0.0), (0.05, 1e-2), (0.1, 0.0))]
    whole = real_engine.reconstruct("tv", "ct", y, params, norms, options)
    per_sample = sum(v[:1].nbytes for v in params.values())
    monkeypatch.setattr("service.engine.CHUNK_BYTES", per_sample)  # one sample a call
    batches: list[int] = []
    run = real_engine._run

    def counted(rel: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batches.append(len(feeds["y"]))
        return run(rel, feeds)

    monkeypatch.setattr(real_engine, "_run", counted)
    chunked = real_engine.reconstruct("tv", "ct", y, params, norms, options)
    assert set(batches) == {1}
    np.testing.assert_allclose(chunked.x, whole.x, atol=1e-6)
    np.testing.assert_array_equal(chunked.iterations, whole.iterations)
    np.testing.assert_array_equal(chunked.lam, whole.lam)
