"""The batch runner: stacking, one engine call per request's set S, score and consistency."""

from __future__ import annotations

import numpy as np
import pytest

from service import equivariance as eq
from service.engine import Engine, ReconOptions
from service.operators.compile import compile_operator
from service.operators.spec import (
    CT,
    Denoising,
    Inpainting,
    SuperResolution,
    UniformAngles,
    UniformAnglesSpec,
)
from service.worker import Task, batch_key, run_batch
from tests.service.fakes import FakeEngine, forward


def task(model: str, op_spec, x: np.ndarray, group: str | None = "D4",
         transforms: int | None = None, want_map: bool = False) -> Task:
    op = compile_operator(op_spec)
    y = forward(op.kernel, x[None], {k: v[None] for k, v in op.params.items()})[0]
    s = tuple(eq.select(group, op.image_shape, transforms)) if group else ()
    return Task(model, op, y.astype(np.float32), ReconOptions(), group, s, want_map)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((16, 16)).astype(np.float32)


def test_identity_model_on_denoising_scores_zero_and_is_consistent(x: np.ndarray) -> None:
    engine = FakeEngine()
    spec = Denoising(type="denoising", shape=(16, 16))
    outcomes = run_batch(engine, [task("adjoint", spec, x, want_map=True) for _ in range(3)])
    for out in outcomes:
        assert np.array_equal(out.image, x)
        assert out.data_consistency == 0.0 and out.iterations == 1
        assert out.equivariance is not None
        assert (out.equivariance.score, out.equivariance.group) == (0.0, "D4")
        assert out.equivariance.transforms == 7
        assert out.equivariance.map is not None and not out.equivariance.map.any()


def test_each_request_set_runs_as_one_engine_call(x: np.ndarray) -> None:
    engine = FakeEngine()
    spec = Denoising(type="denoising", shape=(16, 16))
    run_batch(engine, [task("adjoint", spec, x) for _ in range(3)], max_batch=8)
    # x̂ for the batch; then per request: A x̂ with its 7 A T_g x̂ (8), and 7 x̃_g.
    assert engine.calls == [("reconstruct", "adjoint", 3)] + [
        ("forward", "denoising", 8), ("reconstruct", "adjoint", 7)] * 3


def test_small_sets_of_several_requests_share_a_call(x: np.ndarray) -> None:
    engine = FakeEngine()
    spec = Denoising(type="denoising", shape=(16, 16))
    tasks = [task("adjoint", spec, x, "flips", 1) for _ in range(4)] + [
        task("adjoint", spec, x, None)]
    outcomes = run_batch(engine, tasks, max_batch=7)
    # Packs of at most 7 images, whole requests only: 2+2+2 | 2+1.
    assert engine.calls == [("reconstruct", "adjoint", 5), ("forward", "denoising", 6),
                            ("reconstruct", "adjoint", 3), ("forward", "denoising", 3),
                            ("reconstruct", "adjoint", 1)]
    assert outcomes[-1].equivariance is None


def test_a_non_equivariant_model_scores_above_zero(x: np.ndarray) -> None:
    spec = Denoising(type="denoising", shape=(16, 16))
    (out,) = run_batch(FakeEngine(), [task("tilted", spec, x)])
    assert out.equivariance is not None and out.equivariance.score > 1e-3
    assert out.equivariance.score_db < 30.0


def test_data_consistency_of_the_adjoint_for_superresolution(x: np.ndarray) -> None:
    spec = SuperResolution(type="superresolution", shape=(16, 16), factor=2)
    (out,) = run_batch(FakeEngine(), [task("adjoint", spec, x, "shifts")])
    # Aᵀ of box averaging by 2 scales by 1/2: ‖A Aᵀ y - y‖ / ‖y‖ = 1 - 1/4.
    assert out.data_consistency == pytest.approx(0.75, rel=1e-5)
    assert out.image.shape == (16, 16) and out.equivariance is not None


def test_the_evaluations_reuse_the_automatic_lambda_of_x_hat(x: np.ndarray) -> None:
    engine = FakeEngine()
    spec = SuperResolution(type="superresolution", shape=(16, 16), factor=2)
    run_batch(engine, [task("tv", spec, x, "shifts", 3)])
    first, evaluations = engine.options_seen
    assert first[0].lam is None  # chosen by the engine for x̂ ...
    chosen = np.float32(0.01 * np.abs(forward("superresolution", x[None], {
        k: v[None] for k, v in compile_operator(spec).params.items()})).mean())
    assert [o.lam for o in evaluations] == [pytest.approx(chosen)] * 3  # ... then pinned


def test_batch_key_separates_what_cannot_stack(x: np.ndarray) -> None:
    a = task("adjoint", Denoising(type="denoising", shape=(16, 16)), x)
    b = task("tv", Denoising(type="denoising", shape=(16, 16)), x)
    c = task("adjoint", Inpainting(type="inpainting", shape=(16, 16),
                                   mask={"random": {"keep": 0.5, "seed": 1}}), x)
    d = task("adjoint", Inpainting(type="inpainting", shape=(16, 16),
                                   mask={"random": {"keep": 0.3, "seed": 2}}), x)
    assert batch_key(a) == batch_key(a) != batch_key(b)
    assert batch_key(c) == batch_key(d) != batch_key(a)  # masks differ, shapes do not


def _ct(count: int) -> CT:
    angles = UniformAngles(uniform=UniformAnglesSpec(count=count))
    return CT(type="ct", shape=(32, 32), angles=angles)


def test_a_request_scores_the_same_alone_and_stacked_with_another_operator(
    real_engine: Engine, x: np.ndarray
) -> None:
    """Alone, a request's operator tensors go to the engine once, shared by its rows;
    beside a request with another operator object (compiled again: equal values) they are
    stacked per row. Same answer either way."""
    image = np.kron(x, np.ones((2, 2), np.float32))  # 32x32

    def ct_task(count: int) -> Task:
        op = compile_operator(_ct(count))
        y = real_engine.forward("ct", image[None], {k: v[None] for k, v in op.params.items()})
        return Task("pinv", op, y[0], ReconOptions(), "D4", tuple(eq.select("D4", (32, 32), 7)))

    alone = ct_task(12)
    (shared,) = run_batch(real_engine, [alone])
    stacked, _ = run_batch(real_engine, [alone, ct_task(12)])
    np.testing.assert_allclose(shared.image, stacked.image, atol=1e-6)
    assert shared.equivariance is not None and stacked.equivariance is not None
    assert shared.equivariance.score == pytest.approx(stacked.equivariance.score, rel=1e-5)
    assert shared.data_consistency == pytest.approx(stacked.data_consistency, rel=1e-5)


def test_shared_operator_tensors_are_copied_once_for_all_chunks(
    real_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that shares one operator runs in chunks (here one row a call) off one
    repeated copy, and each graph call still gets one operator row per image."""
    op = compile_operator(_ct(12))
    shared = {k: v[None] for k, v in op.params.items()}
    images = np.random.default_rng(2).random((5, 32, 32), dtype=np.float32)
    y = real_engine.forward("ct", images, shared)
    per_row = {k: np.repeat(v, 5, 0) for k, v in shared.items()}
    np.testing.assert_array_equal(y, real_engine.forward("ct", images, per_row))
    norms = np.full(5, op.norm, np.float32)
    whole = real_engine.reconstruct("pinv", "ct", y, per_row, norms, [ReconOptions()] * 5)

    monkeypatch.setattr("service.engine.CHUNK_BYTES", 2 * sum(v.nbytes for v in shared.values()))
    fed: list[np.ndarray] = []
    run = real_engine._run

    def recorded(rel: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = run(rel, feeds)
        fed.append(real_engine._last_repeated[1]["fwd_index"])
        assert len(feeds["y"]) <= 2
        return out

    monkeypatch.setattr(real_engine, "_run", recorded)
    chunked = real_engine.reconstruct("pinv", "ct", y, shared, norms, [ReconOptions()] * 5)
    np.testing.assert_allclose(chunked.x, whole.x, atol=1e-6)
    assert len(fed) == 3  # 5 rows, at most 2 a call: 2, 2, 1 (spread: 1, 2, 2)
    assert all(f is fed[0] for f in fed)  # one copy served every chunk
