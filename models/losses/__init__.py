"""Training losses: measurement consistency, SURE, recorrupted-to-recorrupted,
equivariant imaging, multi-operator imaging, supervised; the held-out measurement error
(a validation criterion without ground truth)."""

from models.losses.consistency import R2R_ALPHA, mc_loss, r2r_loss, recorrupt, sure_loss
from models.losses.equivariant import TRANSFORMS, ei_loss, moi_loss, random_transform
from models.losses.heldout import HELDOUT_KERNELS, heldout_error, split
from models.losses.supervised import supervised_loss

__all__ = [
    "HELDOUT_KERNELS",
    "R2R_ALPHA",
    "TRANSFORMS",
    "ei_loss",
    "heldout_error",
    "mc_loss",
    "moi_loss",
    "r2r_loss",
    "random_transform",
    "recorrupt",
    "split",
    "supervised_loss",
    "sure_loss",
]
