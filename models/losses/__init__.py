"""Training losses: measurement consistency, SURE, equivariant imaging, multi-operator
imaging, supervised."""

from models.losses.consistency import mc_loss, sure_loss
from models.losses.equivariant import TRANSFORMS, ei_loss, moi_loss, random_transform
from models.losses.supervised import supervised_loss

__all__ = [
    "TRANSFORMS",
    "ei_loss",
    "mc_loss",
    "moi_loss",
    "random_transform",
    "supervised_loss",
    "sure_loss",
]
