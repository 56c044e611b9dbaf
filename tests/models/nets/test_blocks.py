"""Denoising blocks: D4 group algebra, exact p4m equivariance, sizes, ONNX parity."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.export import Dim

from models.nets import blocks
from models.nets.blocks import (
    D4_CAYLEY,
    D4_INVERSE,
    CNNBlock,
    GroupConv2d,
    LiftingConv2d,
    P4MBlock,
    d4_transforms,
    n_params,
)

T = d4_transforms()
ELEMENTS = range(8)
BLOCKS = [CNNBlock, P4MBlock]
#: A non-square image (rot90 turns it into 28 x 20) and a square one.
SHAPES = [(2, 20, 28), (2, 16, 16)]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _equivariance_error(block: nn.Module, x: torch.Tensor, g: int) -> float:
    """``‖D(T_g x) - T_g D(x)‖ / ‖D(x) - x‖``.

    Relative to the residual branch, not to ``D(x)``: the identity part is
    equivariant by itself and would hide a broken branch behind a small ratio.
    """
    with torch.no_grad():
        y = block(x)
        return float(torch.linalg.vector_norm(block(T[g](x)) - T[g](y)) / (y - x).norm())


def _seeded(cls: type[nn.Module], **kwargs: int) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs)


def test_all_is_exported() -> None:
    assert all(hasattr(blocks, name) for name in blocks.__all__)


def test_cayley_table_is_the_composition_of_the_transforms() -> None:
    x = _randn(5, 7)
    for a in ELEMENTS:
        for b in ELEMENTS:
            assert torch.equal(T[a](T[b](x)), T[D4_CAYLEY[a][b]](x)), (a, b)
        assert D4_CAYLEY[a][D4_INVERSE[a]] == 0
    # Eight distinct maps: on a generic square image no two agree.
    square = _randn(6, 6)
    images = {tuple(T[g](square).flatten().tolist()) for g in ELEMENTS}
    assert len(images) == 8


def _act(h: int, f: torch.Tensor) -> torch.Tensor:
    """The regular representation on ``[B, C * 8, H, W]``: ``(T_h f)_g = T_h f_{h^{-1} g}``."""
    b, c8, height, width = f.shape
    fields = f.reshape(b, c8 // 8, 8, height, width)
    permuted = fields[:, :, [D4_CAYLEY[D4_INVERSE[h]][g] for g in ELEMENTS]]
    return T[h](permuted).flatten(1, 2)


@pytest.mark.parametrize("h", ELEMENTS)
def test_group_layers_transform_by_the_regular_representation(h: int) -> None:
    torch.manual_seed(0)
    lifting, group = LiftingConv2d(2, 3).double(), GroupConv2d(3, 2).double()
    x, f = _randn(1, 2, 9, 12, seed=1), _randn(1, 24, 9, 12, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(lifting(T[h](x)), _act(h, lifting(x)), rtol=0, atol=1e-12)
        torch.testing.assert_close(group(_act(h, f)), _act(h, group(f)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=["20x28", "16x16"])
@pytest.mark.parametrize("g", ELEMENTS)
def test_p4m_block_is_d4_equivariant(g: int, shape: tuple[int, int, int]) -> None:
    block = _seeded(P4MBlock).double()
    assert _equivariance_error(block, _randn(*shape), g) < 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=["20x28", "16x16"])
def test_cnn_block_is_not_equivariant_at_init(shape: tuple[int, int, int]) -> None:
    block = _seeded(CNNBlock).double()
    x = _randn(*shape)
    assert _equivariance_error(block, x, 0) == 0.0
    for g in range(1, 8):
        assert _equivariance_error(block, x, g) > 1e-3, g


@pytest.mark.parametrize(("channels", "depth"), [(4, 2), (3, 5)])
def test_p4m_block_stays_equivariant_after_a_training_step(channels: int, depth: int) -> None:
    block = _seeded(P4MBlock, channels=channels, depth=depth).double()
    before = [p.detach().clone() for p in block.parameters()]
    x = _randn(2, 11, 8)
    # A target that is not symmetric, so the step is not symmetric either.
    loss = ((block(x) - torch.linspace(0, 1, 8, dtype=torch.float64)) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        for p in block.parameters():
            p -= 10.0 * p.grad
    assert all(not torch.equal(p, q) for p, q in zip(block.parameters(), before, strict=True))
    for g in ELEMENTS:
        assert _equivariance_error(block, x, g) < 1e-5


@pytest.mark.parametrize("cls", BLOCKS)
def test_parameter_counts_are_comparable(cls: type[nn.Module]) -> None:
    counts = {c: n_params(c()) for c in BLOCKS}
    assert 20_000 <= counts[cls] <= 120_000
    assert max(counts.values()) / min(counts.values()) < 1.25


@pytest.mark.parametrize("cls", BLOCKS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 3), (3, 7, 30)])
def test_block_keeps_any_shape_and_its_residual_is_live(
    cls: type[nn.Module], shape: tuple[int, int, int]
) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = _seeded(cls)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float((y - x).abs().mean()) > 1e-4


@pytest.mark.parametrize("cls", [CNNBlock, P4MBlock, LiftingConv2d, GroupConv2d])
def test_even_kernel_and_short_depth_are_refused(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="odd"):
        cls(1, 2, 4)
    if cls in BLOCKS:
        with pytest.raises(ValueError, match="depth"):
            cls(4, 1)


@pytest.mark.parametrize("cls", BLOCKS)
def test_onnx_export_runs_at_another_size(cls: type[nn.Module]) -> None:
    block = _seeded(cls).eval()
    example = torch.rand(2, 24, 20, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            block,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: Dim.AUTO, 1: Dim.AUTO, 2: Dim.AUTO},),
            verbose=False,
        )
    assert program is not None
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = block(x).numpy()
    assert got.shape == (3, 40, 36)
    assert float(np.abs(got - want).max()) < 1e-4
