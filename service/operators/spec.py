"""Operator specs: the JSON a client sends to say how ``y = A x + n`` was taken.

Field names are fixed by DESIGN.md §6. Array-valued parameters take either a
wire Array or a deterministic generator object; ``generators.py`` documents
the exact recipe of each generator so a client can rebuild it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.wire import ArrayModel

__all__ = [
    "CT",
    "MRI",
    "Birdcage",
    "BirdcageCoils",
    "Blur",
    "CartesianMask",
    "CartesianMaskSpec",
    "CompressedSensing",
    "Denoising",
    "GaussianKernel",
    "GaussianKernelSpec",
    "Inpainting",
    "MRIMulticoil",
    "NoiseSpec",
    "Operator",
    "RandomMask",
    "RandomMaskSpec",
    "SuperResolution",
    "UniformAngles",
    "UniformAnglesSpec",
]

MIN_SIDE, MAX_SIDE = 8, 1024
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, strict=True)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    # Strict: JSON `false` or `"3"` is not a seed; a shape array still fills the tuple.
    model_config = ConfigDict(extra="forbid", strict=True)


class RandomMaskSpec(_Strict):
    keep: float = Field(gt=0.0, le=1.0, description="fraction of pixels observed")
    seed: Seed = 0


class RandomMask(_Strict):
    random: RandomMaskSpec


class GaussianKernelSpec(_Strict):
    sigma: float = Field(gt=0.0, le=32.0, description="standard deviation in pixels")
    size: int = Field(ge=1, le=65, description="odd side length of the kernel")


class GaussianKernel(_Strict):
    gaussian: GaussianKernelSpec


class CartesianMaskSpec(_Strict):
    acceleration: float = Field(ge=1.0, le=32.0)
    center_fraction: float = Field(default=0.08, ge=0.0, le=1.0)
    seed: Seed = 0


class CartesianMask(_Strict):
    cartesian: CartesianMaskSpec


class Birdcage(_Strict):
    count: int = Field(ge=1, le=32, description="number of coils")


class BirdcageCoils(_Strict):
    birdcage: Birdcage


class UniformAnglesSpec(_Strict):
    count: int = Field(ge=1, le=720, description="views spread uniformly over [0, 180)")


class UniformAngles(_Strict):
    uniform: UniformAnglesSpec


class _Base(_Strict):
    shape: tuple[Side, Side] = Field(strict=False, description="[H, W] of the image")


class Denoising(_Base):
    """``y = x + n``."""

    type: Literal["denoising"]


class Inpainting(_Base):
    """``y = m * x``: pixels with mask 0 are unobserved (0 in y)."""

    type: Literal["inpainting"]
    mask: ArrayModel | RandomMask


class Blur(_Base):
    """``y = k ⊛ x``, circular convolution with a kernel centred at its middle pixel."""

    type: Literal["blur"]
    kernel: ArrayModel | GaussianKernel


class SuperResolution(_Base):
    """``y = box-average of x over factor x factor blocks``."""

    type: Literal["superresolution"]
    factor: Literal[2, 4]
    filter: Literal["box"] = "box"


class CompressedSensing(_Base):
    """``y = Φ x`` with ``m`` seeded random measurements of the flattened image."""

    type: Literal["compressed_sensing"]
    m: int = Field(ge=1, le=MAX_SIDE * MAX_SIDE)
    seed: Seed = 0
    matrix: Literal["gaussian", "structured"] = "gaussian"


class MRI(_Base):
    """``y = M ⊙ F x``, F the orthonormal centred 2-D FFT."""

    type: Literal["mri"]
    mask: ArrayModel | CartesianMask


class MRIMulticoil(_Base):
    """``y_c = M ⊙ F (S_c x)`` for coil sensitivities ``S_c``."""

    type: Literal["mri_multicoil"]
    mask: ArrayModel | CartesianMask
    coils: ArrayModel | BirdcageCoils


class CT(_Base):
    """Parallel-beam line integrals (pixel units) at the given angles (degrees)."""

    type: Literal["ct"]
    angles: Annotated[list[float], Field(min_length=1, max_length=720)] | UniformAngles
    detectors: int | None = Field(
        default=None, ge=1, le=4 * MAX_SIDE, description="detector bins (default: H)"
    )


Operator = Annotated[
    Denoising | Inpainting | Blur | SuperResolution | CompressedSensing | MRI | MRIMulticoil | CT,
    Field(discriminator="type"),
]


class NoiseSpec(_Strict):
    """Gaussian noise of standard deviation ``sigma`` on every real component."""

    sigma: float = Field(default=0.0, ge=0.0, le=10.0)
    seed: Seed = 0
