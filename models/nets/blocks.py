r"""Learned denoising blocks for the unrolled networks: a plain CNN and a p4m-equivariant one.

Both blocks are residual maps of an image batch ``[B, H, W]``,

.. math::
    D(x) = x + f_\theta(x),

fully convolutional with 3x3 "same" zero padding, so one set of weights (and one
ONNX graph, every axis dynamic) serves every image size.

:class:`P4MBlock` makes :math:`f_\theta` exactly equivariant to the dihedral
group :math:`D_4` of the pixel grid (rotations by multiples of 90 degrees and
flips), :math:`f_\theta(T_g x) = T_g f_\theta(x)` for all eight :math:`g`.
Its features carry a group axis: a field of :math:`C` channels is stored as
:math:`8C` ordinary channels, channel ``c * 8 + g`` holding field ``c`` seen
through element ``g``. With :math:`\star` the cross-correlation of ``conv2d``,

.. math::
    \text{lifting:}\quad (x \star_\uparrow \psi)_g = x \star T_g \psi, \qquad
    \text{group conv:}\quad (f \star_G \psi)_g = \sum_{h \in D_4} f_h \star T_g\,\psi_{g^{-1}h},

and both satisfy :math:`(T_k f)_g = T_k f_{k^{-1} g}` on the output when it
holds on the input (the regular representation). The identity behind both is
:math:`(T_g x) \star (T_g \phi) = T_g (x \star \phi)`, exact for odd kernels
and symmetric zero padding because :math:`T_g` is a permutation of pixels about
the centre of the image (and of the kernel), for any ``H`` and ``W``. A
pointwise nonlinearity and a bias shared over the group axis keep it; the mean
over the group axis of the last group conv is invariant, which gives an
equivariant image. The expanded filters are computed in ``forward`` from the
base weights (``rot90``, ``flip`` and a gather with the Cayley table), so the
run-time layer is a plain ``conv2d``: training updates the base weights and
the ONNX graph has nothing but standard ops.

Weight sharing costs compute: at equal parameter count the p4m block runs
about 8x the multiply-adds of the plain CNN (each base weight is used by
eight group channels).

Example
-------
>>> import torch
>>> block = P4MBlock(channels=4, depth=3).double()
>>> x = torch.randn(2, 10, 7, dtype=torch.float64)
>>> rotate, flip = d4_transforms()[1], d4_transforms()[4]
>>> bool(torch.allclose(block(rotate(x)), rotate(block(x))))
True
>>> bool(torch.allclose(block(flip(x)), flip(block(x))))
True
>>> CNNBlock(channels=8, depth=3)(torch.rand(1, 12, 9)).shape
torch.Size([1, 12, 9])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "D4_CAYLEY",
    "D4_INVERSE",
    "CNNBlock",
    "GroupConv2d",
    "LiftingConv2d",
    "P4MBlock",
    "d4_transforms",
    "n_params",
]

#: Order of :math:`D_4`.
GROUP = 8

Transform = Callable[[torch.Tensor], torch.Tensor]


def _element(g: int) -> tuple[int, int]:
    """Element ``g = 4 m + k`` as ``(k, m)``: flip ``m`` times, then rotate ``k`` times."""
    return g % 4, g // 4


def _compose(a: int, b: int) -> int:
    r"""Index of :math:`T_a T_b`, from :math:`F R^k = R^{-k} F`."""
    (ka, ma), (kb, mb) = _element(a), _element(b)
    k = (ka + (kb if ma == 0 else -kb)) % 4
    return 4 * ((ma + mb) % 2) + k


#: ``D4_CAYLEY[a][b]`` is the index of the product :math:`ab` (apply ``b`` first).
D4_CAYLEY: tuple[tuple[int, ...], ...] = tuple(
    tuple(_compose(a, b) for b in range(GROUP)) for a in range(GROUP)
)
#: ``D4_INVERSE[g]`` is the index of :math:`g^{-1}`.
D4_INVERSE: tuple[int, ...] = tuple(D4_CAYLEY[g].index(0) for g in range(GROUP))


def _transform(g: int, x: torch.Tensor) -> torch.Tensor:
    k, m = _element(g)
    if m:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def d4_transforms() -> tuple[Transform, ...]:
    r"""The eight elements :math:`T_g` of :math:`D_4` as maps of ``[..., H, W]`` tensors.

    Element ``g = 4 m + k`` flips the last axis ``m`` times, then rotates by
    ``k`` quarter turns (``torch.rot90``, dims ``(-2, -1)``): ``0`` is the
    identity, ``1..3`` the rotations, ``4..7`` the reflections. Rotations by
    90 and 270 degrees swap ``H`` and ``W``. Products follow :data:`D4_CAYLEY`.

    Example
    -------
    >>> import torch
    >>> x = torch.arange(6.0).reshape(2, 3)
    >>> T = d4_transforms()
    >>> T[1](x).shape, bool(torch.equal(T[4](T[4](x)), x))
    (torch.Size([3, 2]), True)
    """
    return tuple(partial(_transform, g) for g in range(GROUP))


def _uniform_(weight: torch.Tensor, bias: torch.Tensor, fan_in: int) -> None:
    # The init of nn.Conv2d (kaiming_uniform with a = sqrt(5)): U(±1/sqrt(fan_in)),
    # with the fan-in counted over the group axis too, so both blocks start alike.
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


def _group_bias(bias: torch.Tensor) -> torch.Tensor:
    # One bias per field, repeated over its 8 group channels (channel c * 8 + g).
    return bias[:, None].expand(bias.shape[0], GROUP).reshape(-1)


class LiftingConv2d(nn.Module):
    r"""Lifting convolution, ``[B, C_in, H, W] -> [B, 8 C_out, H, W]``.

    .. math::
        y_{c, g} = \sum_{c'} x_{c'} \star T_g \psi_{c, c'} + b_c .

    Example
    -------
    >>> LiftingConv2d(1, 3)(torch.rand(2, 1, 5, 6)).shape
    torch.Size([2, 24, 5, 6])
    """

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_odd(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_fields))
        _uniform_(self.weight, self.bias, in_channels * kernel_size**2)

    def expanded_weight(self) -> torch.Tensor:
        """The ``conv2d`` weight ``[8 C_out, C_in, k, k]``."""
        stacked = torch.stack([_transform(g, self.weight) for g in range(GROUP)], dim=1)
        return stacked.flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.expanded_weight(), _group_bias(self.bias), padding="same")


class GroupConv2d(nn.Module):
    r"""Group convolution on :math:`D_4`, ``[B, 8 C_in, H, W] -> [B, 8 C_out, H, W]``.

    .. math::
        y_{c, g} = \sum_{c', h} x_{c', h} \star T_g \psi_{c, c', g^{-1} h} + b_c .

    Example
    -------
    >>> GroupConv2d(2, 3)(torch.rand(1, 16, 5, 6)).shape
    torch.Size([1, 24, 5, 6])
    """

    group_index: torch.Tensor

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_odd(kernel_size)
        self.weight = nn.Parameter(
            torch.empty(out_fields, in_fields, GROUP, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_fields))
        _uniform_(self.weight, self.bias, in_fields * GROUP * kernel_size**2)
        # group_index[g, h] = g^{-1} h: which base filter output element g reads from input h.
        index = [[D4_CAYLEY[D4_INVERSE[g]][h] for h in range(GROUP)] for g in range(GROUP)]
        self.register_buffer("group_index", torch.tensor(index), persistent=False)

    def expanded_weight(self) -> torch.Tensor:
        """The ``conv2d`` weight ``[8 C_out, 8 C_in, k, k]``."""
        per_element = [
            _transform(g, self.weight.index_select(2, self.group_index[g])) for g in range(GROUP)
        ]
        # [C_out, 8 (g), C_in, 8 (h), k, k]: out channel c * 8 + g, in channel c' * 8 + h.
        stacked = torch.stack(per_element, dim=1)
        return stacked.flatten(0, 1).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.expanded_weight(), _group_bias(self.bias), padding="same")


def _check_odd(kernel_size: int) -> None:
    if kernel_size % 2 != 1:
        # An even kernel has no centre pixel: rot90 of it shifts the output by half a pixel.
        raise ValueError(f"kernel_size must be odd for exact equivariance, got {kernel_size}")


def _check_depth(depth: int) -> None:
    if depth < 2:
        raise ValueError(f"depth counts the first and last convolutions, so >= 2; got {depth}")


class CNNBlock(nn.Module):
    r"""Residual plain CNN denoiser, ``[B, H, W] -> [B, H, W]``.

    .. math::
        D(x) = x + W_d * \sigma(W_{d-1} * \cdots \sigma(W_1 * x + b_1) \cdots) + b_d,

    ``depth`` convolutions in all (``1 -> C``, ``depth - 2`` of ``C -> C``,
    ``C -> 1``), ReLU between them. At the defaults (``C = 48``, ``depth = 4``)
    it has 42 481 parameters, close to :class:`P4MBlock`'s 38 209.

    :param channels: width ``C``.
    :param depth: number of convolutions, at least 2.
    :param kernel_size: odd spatial size of every kernel.

    Example
    -------
    >>> block = CNNBlock()
    >>> n_params(block)
    42481
    >>> block(torch.rand(2, 17, 11)).shape
    torch.Size([2, 17, 11])
    """

    def __init__(self, channels: int = 48, depth: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        _check_odd(kernel_size)
        _check_depth(depth)
        widths = [1] + [channels] * (depth - 1) + [1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(pairwise(widths)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(c_in, c_out, kernel_size, padding="same"))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x.unsqueeze(1)).squeeze(1)


class P4MBlock(nn.Module):
    r"""Residual :math:`D_4`-equivariant denoiser, ``[B, H, W] -> [B, H, W]``.

    .. math::
        D(x) = x + \frac{1}{8} \sum_{g \in D_4}
            \big(\psi_d \star_G \sigma(\cdots \sigma(x \star_\uparrow \psi_1))\big)_g,
        \qquad D(T_g x) = T_g D(x) \ \ \forall g \in D_4,

    a lifting convolution (``1 -> C`` fields, ``8C`` channels), ``depth - 2``
    group convolutions (``C -> C`` fields), ReLU between them, and a group
    convolution to one field averaged over the group axis. At the defaults
    (``C = 16``, ``depth = 4``, 128 group channels inside) it has 38 209
    parameters, close to :class:`CNNBlock`'s 42 481.

    :param channels: number of fields ``C`` (each ``8`` channels wide).
    :param depth: number of convolutions, at least 2.
    :param kernel_size: odd spatial size of every kernel.

    Example
    -------
    >>> block = P4MBlock()
    >>> n_params(block)
    38209
    >>> block(torch.rand(2, 17, 11)).shape
    torch.Size([2, 17, 11])
    """

    def __init__(self, channels: int = 16, depth: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        _check_depth(depth)
        layers: list[nn.Module] = [LiftingConv2d(1, channels, kernel_size)]
        for _ in range(depth - 2):
            layers += [nn.ReLU(), GroupConv2d(channels, channels, kernel_size)]
        layers += [nn.ReLU(), GroupConv2d(channels, 1, kernel_size)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 8, H, W] (one field over the group) -> its mean, invariant over the group axis.
        return x + self.net(x.unsqueeze(1)).mean(dim=1)


def n_params(module: nn.Module) -> int:
    """Number of trainable parameters (base weights only for the group layers)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
