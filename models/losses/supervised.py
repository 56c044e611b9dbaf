"""Supervised loss: mean squared error to the ground truth (the upper-bound baseline)."""

from __future__ import annotations

import torch

__all__ = ["supervised_loss"]


def supervised_loss(x_net: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mean((x_net - x)²)``.

    >>> import torch
    >>> float(supervised_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)))
    1.0
    """
    return ((x_net - x) ** 2).mean()
