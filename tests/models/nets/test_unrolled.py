"""The unrolled network and its D4 average (the Reynolds operator)."""

from __future__ import annotations

import pytest
import torch

from models.nets.blocks import CNNBlock, d4_transforms
from models.nets.unrolled import GroupAveraged, Unrolled
from models.physics.operators import Physics

T = d4_transforms()
#: Pixel-wise families: rotating the scene rotates the measurement and the mask with it.
SPECS = {
    "inpainting": {"type": "inpainting", "shape": [12, 16], "mask": {"random": {"keep": 0.5}}},
    "denoising": {"type": "denoising", "shape": [12, 16]},
}


def _problem(family: str) -> tuple[Unrolled, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    physics = Physics.from_json(SPECS[family])
    torch.manual_seed(0)
    net = Unrolled(physics.kernel, [CNNBlock(channels=8, depth=3) for _ in range(2)]).double()
    x = torch.rand(2, 12, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = {k: v.double() for k, v in physics.params(2).items()}
    y = physics.A(x.float()).double()
    return net, y, params, torch.ones(2, dtype=torch.float64)


def _error(f, y, params, inv_norm, g: int) -> float:  # type: ignore[no-untyped-def]
    """``‖f(T y, T params) - T f(y, params)‖ / ‖f(y, params)‖``."""
    with torch.no_grad():
        out = f(y, params, inv_norm)
        moved = f(T[g](y), {k: T[g](v) for k, v in params.items()}, inv_norm)
        return float((moved - T[g](out)).norm() / out.norm())


@pytest.mark.parametrize("family", sorted(SPECS))
@pytest.mark.parametrize("g", range(1, 8))
def test_group_average_is_exactly_equivariant_where_the_network_is_not(
    family: str, g: int
) -> None:
    net, y, params, inv_norm = _problem(family)
    assert _error(GroupAveraged(net), y, params, inv_norm, g) < 1e-12
    assert _error(net, y, params, inv_norm, g) > 1e-3


def test_identity_frame_is_the_plain_network_and_the_average_keeps_the_shape() -> None:
    net, y, params, inv_norm = _problem("inpainting")
    with torch.no_grad():
        plain = net(y, params, inv_norm)
        framed = net(y, params, inv_norm, (T[0], T[0]))
        averaged = GroupAveraged(net)(y, params, inv_norm)
    assert torch.equal(plain, framed)
    assert averaged.shape == plain.shape
    # The average of eight different passes is not any one of them.
    assert float((averaged - plain).abs().max()) > 1e-4


def test_the_final_tv_step_is_learned_and_optional() -> None:
    net, y, params, inv_norm = _problem("inpainting")
    with_tv = Unrolled(net.kernel, net.blocks, tv_weight=0.05).double()
    assert "log_tv" in dict(with_tv.named_parameters())
    assert "log_tv" not in dict(net.named_parameters())
    with torch.no_grad():
        plain, smoothed = net(y, params, inv_norm), with_tv(y, params, inv_norm)
    assert float(smoothed.min()) >= 0.0
    # TV shrinks the total variation of the same blocks' output.
    def tv(x: torch.Tensor) -> float:
        return float(x.diff(dim=1).abs().sum() + x.diff(dim=2).abs().sum())

    assert tv(smoothed) < tv(plain)
    with pytest.raises(ValueError, match="tv_weight"):
        Unrolled(net.kernel, net.blocks, tv_weight=-1.0)


def test_the_data_consistency_stage_corrects_through_the_pseudo_inverse() -> None:
    net, y, params, inv_norm = _problem("inpainting")
    with_dc = Unrolled(net.kernel, net.blocks, tv_weight=0.05, dc_step=0.25).double()
    assert {"log_tv", "log_dc", "log_dc_tv"} <= set(dict(with_dc.named_parameters()))
    x = torch.rand(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        z = with_dc._data_consistency(x, y, params, (T[0], T[0]))
    # Inpainting's A† is the mask: a quarter of the way to each measured pixel, the others
    # left as they are.
    assert with_dc.log_dc is not None
    mask, alpha = params["mask"], with_dc.log_dc.exp()  # 0.25, as stored
    torch.testing.assert_close(z, x + alpha * mask * (y - x), rtol=1e-10, atol=1e-10)
    # The whole network ends with it and a second TV step, and its D4 average stays exact.
    for g in range(1, 8):
        assert _error(GroupAveraged(with_dc), y, params, inv_norm, g) < 1e-12
    with pytest.raises(ValueError, match="dc_step"):
        Unrolled(net.kernel, net.blocks, dc_step=0.1)  # no TV step after it
