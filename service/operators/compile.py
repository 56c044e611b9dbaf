"""Compile an operator spec into the tensors its ONNX graphs take.

One graph serves a whole family because every operator parameter is a graph
input. This module turns a validated spec (generators expanded, arrays checked
against the image shape) into a :class:`CompiledOperator`: the graph family
(``kernel``), the parameter tensors (no batch axis; the worker stacks them),
the measurement's wire shape and dtype, and an estimate of ``‖A‖₂`` that the
TV solver uses to normalise its data term.

Complex measurements travel inside graphs as float32 with a leading
(re, im) axis: complex64 ``[C, H, W]`` on the wire is ``[2, C, H, W]`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from service.operators import generators as gen
from service.operators import spec as s
from service.operators.ct_geometry import ct_geometry, ct_norm

__all__ = [
    "DENSE_CS_MAX_PIXELS",
    "KERNELS",
    "CompiledOperator",
    "OperatorError",
    "compile_operator",
]

#: Graph families. A family may use two kernels (compressed sensing).
KERNELS = (
    "denoising",
    "inpainting",
    "blur",
    "superresolution",
    "cs_dense",
    "cs_structured",
    "mri",
    "mri_multicoil",
    "ct",
)
#: A dense Gaussian matrix is m x HW floats: cap it at 64x64 images (DESIGN.md §6).
DENSE_CS_MAX_PIXELS = 64 * 64
#: Relative singular-value cut-off of the blur pseudo-inverse (truncated SVD).
BLUR_PINV_CUTOFF = 1e-3


class OperatorError(ValueError):
    """An operator spec that validates as JSON but cannot be built.

    ``loc`` is the path of the offending field inside the operator object.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


@dataclass(frozen=True)
class CompiledOperator:
    """An operator ready for its graphs: kernel name, parameter tensors, shapes."""

    family: str
    kernel: str
    image_shape: tuple[int, int]
    measurement_shape: tuple[int, ...]
    measurement_dtype: str  # wire dtype: "float32" or "complex64"
    params: dict[str, np.ndarray] = field(repr=False)
    norm: float
    # The spec it was compiled from: compiling it again gives the same parameters,
    # which is how a job crosses to a Celery worker without its arrays.
    source: s.Operator | None = field(default=None, repr=False, compare=False)

    @property
    def graph_measurement_shape(self) -> tuple[int, ...]:
        if self.measurement_dtype == "complex64":
            return (2, *self.measurement_shape)
        return self.measurement_shape

    def to_graph(self, y: np.ndarray) -> np.ndarray:
        """Wire measurements -> graph layout (complex split into re, im)."""
        if self.measurement_dtype == "complex64":
            return np.stack([y.real, y.imag]).astype(np.float32)
        return np.asarray(y, dtype=np.float32)

    def from_graph(self, y: np.ndarray) -> np.ndarray:
        """Graph layout -> wire measurements, for one sample (no batch axis)."""
        if self.measurement_dtype == "complex64":
            return (y[0] + 1j * y[1]).astype(np.complex64)
        return np.asarray(y, dtype=np.float32)

    def check_measurements(self, y: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``y`` has this operator's wire shape and dtype."""
        want = f"{self.measurement_dtype} {list(self.measurement_shape)}"
        got = f"{y.dtype.name} {list(y.shape)}"
        if tuple(y.shape) != self.measurement_shape or y.dtype.name != self.measurement_dtype:
            raise ValueError(f"measurements must be {want} for this operator, got {got}")


def compile_operator(op: s.Operator) -> CompiledOperator:
    """Build the graph inputs of ``op`` (raises :class:`OperatorError`)."""
    compiler: Callable[[s.Operator], CompiledOperator] = _COMPILERS[type(op)]  # type: ignore[assignment]
    # Extreme but schema-valid parameters (a Gaussian sigma of 1e-300) can
    # overflow: refuse them here so no NaN ever reaches a graph.
    with np.errstate(all="ignore"):
        compiled = compiler(op)
    finite = np.isfinite(compiled.norm) and compiled.norm > 0
    if not finite or not all(
        np.all(np.isfinite(v)) for v in compiled.params.values() if v.dtype.kind == "f"
    ):
        raise OperatorError((), "operator parameters give non-finite values")
    return replace(compiled, source=op)


@lru_cache(maxsize=8)
def compile_json(spec: str) -> CompiledOperator:
    """:func:`compile_operator` of a spec's JSON (a worker's cache: CT's matrices take
    ~0.5 s to build and ~50 MB to ship, the spec a few hundred bytes)."""
    from pydantic import TypeAdapter

    return compile_operator(TypeAdapter(s.Operator).validate_json(spec))


def _image_array(value: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """A mask given as an Array: [H, W], real, values in [0, 1]."""
    if value.dtype.kind == "c":
        raise OperatorError((name,), f"{name} must be real, got complex64")
    if tuple(value.shape) != shape:
        raise OperatorError(
            (name,), f"{name} must have shape {list(shape)}, got {list(value.shape)}"
        )
    out = value.astype(np.float32)
    if out.min(initial=0.0) < 0.0 or out.max(initial=0.0) > 1.0:
        raise OperatorError((name,), f"{name} values must lie in [0, 1]")
    if not out.any():
        raise OperatorError((name,), f"{name} observes nothing (all zeros)")
    return out


def _mask(
    value: s.ArrayModel | s.RandomMask | s.CartesianMask, shape: tuple[int, int]
) -> np.ndarray:
    if isinstance(value, s.RandomMask):
        mask = gen.random_mask(shape, value.random.keep, value.random.seed)
        if not mask.any():
            raise OperatorError(("mask",), "random mask keeps no pixel: raise keep")
        return mask
    if isinstance(value, s.CartesianMask):
        c = value.cartesian
        return gen.cartesian_mask(shape, c.acceleration, c.center_fraction, c.seed)
    return _image_array(value.array, shape, "mask")


def _denoising(op: s.Denoising) -> CompiledOperator:
    return CompiledOperator("denoising", "denoising", op.shape, op.shape, "float32", {}, 1.0)


def _inpainting(op: s.Inpainting) -> CompiledOperator:
    mask = _mask(op.mask, op.shape)
    return CompiledOperator(
        "inpainting", "inpainting", op.shape, op.shape, "float32", {"mask": mask}, float(mask.max())
    )


def _blur(op: s.Blur) -> CompiledOperator:
    height, width = op.shape
    if isinstance(op.kernel, s.GaussianKernel):
        g = op.kernel.gaussian
        if g.size % 2 == 0:
            raise OperatorError(("kernel", "gaussian", "size"), "size must be odd")
        kernel = gen.gaussian_kernel(g.sigma, g.size)
    else:
        kernel = op.kernel.array
        if kernel.ndim != 2 or kernel.dtype.kind == "c":
            raise OperatorError(("kernel",), "kernel must be a real 2-D array")
        kernel = kernel.astype(np.float32)
    kh, kw = kernel.shape
    if kh > height or kw > width:
        raise OperatorError(
            ("kernel",), f"kernel {[kh, kw]} is larger than the image {[height, width]}"
        )
    # Circular convolution with the kernel centred at (kh//2, kw//2): move that
    # pixel to the origin, then the transfer function is the plain FFT.
    padded = np.zeros((height, width), dtype=np.float64)
    padded[:kh, :kw] = kernel
    padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    otf = np.fft.fft2(padded)
    norm = float(np.abs(otf).max())
    if norm == 0.0:
        raise OperatorError(("kernel",), "kernel is all zeros")
    params = {
        "otf": np.stack([otf.real, otf.imag]).astype(np.float32),
        "dft_h": gen.dft_matrix(height),
        "dft_w": gen.dft_matrix(width),
    }
    return CompiledOperator("blur", "blur", op.shape, op.shape, "float32", params, norm)


def _box_matrix(n: int, factor: int) -> np.ndarray:
    d = np.zeros((n // factor, n), dtype=np.float32)
    for i in range(factor):
        d[np.arange(n // factor), np.arange(n // factor) * factor + i] = 1.0 / factor
    return d


def _superresolution(op: s.SuperResolution) -> CompiledOperator:
    height, width = op.shape
    f = op.factor
    if height % f or width % f:
        raise OperatorError(("shape",), f"shape {[height, width]} must be divisible by factor {f}")
    params = {"down_h": _box_matrix(height, f), "down_w": _box_matrix(width, f)}
    return CompiledOperator(
        "superresolution",
        "superresolution",
        op.shape,
        (height // f, width // f),
        "float32",
        params,
        1.0 / f,
    )


def _compressed_sensing(op: s.CompressedSensing) -> CompiledOperator:
    height, width = op.shape
    n = height * width
    if op.m > n:
        raise OperatorError(("m",), f"m = {op.m} exceeds the number of pixels {n}")
    if op.matrix == "gaussian":
        if n > DENSE_CS_MAX_PIXELS:
            raise OperatorError(
                ("matrix",),
                f"a dense gaussian matrix is limited to {DENSE_CS_MAX_PIXELS} pixels; "
                "use matrix='structured' for larger images",
            )
        matrix = _cached_gaussian(op.m, n, op.seed).reshape(op.m, height, width)
        return CompiledOperator(
            "compressed_sensing",
            "cs_dense",
            op.shape,
            (op.m,),
            "float32",
            {"matrix": matrix},
            _matrix_norm(op.m, n, op.seed),
        )
    signs, select = gen.structured_sensing(op.shape, op.m, op.seed)
    # Aᵀ as a gather: pixel j reads y[scatter[j]], where index m is a zero pad.
    scatter = np.full(n, op.m, dtype=np.int64)
    scatter[select] = np.arange(op.m)
    params = {
        "signs": signs,
        "dct_h": gen.dct_matrix(height),
        "dct_w": gen.dct_matrix(width),
        "keep_index": select,
        "keep_inverse": scatter,
    }
    return CompiledOperator(
        "compressed_sensing", "cs_structured", op.shape, (op.m,), "float32", params, 1.0
    )


@lru_cache(maxsize=16)
def _cached_gaussian(m: int, n: int, seed: int) -> np.ndarray:
    matrix = gen.gaussian_matrix(m, n, seed)
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=16)
def _matrix_norm(m: int, n: int, seed: int) -> float:
    # Power method on AᵀA (an SVD of a 4096-column matrix costs seconds).
    matrix = _cached_gaussian(m, n, seed).astype(np.float64)
    v = np.ones(n) / np.sqrt(n)
    sigma2 = 0.0
    for _ in range(50):
        w = matrix.T @ (matrix @ v)
        sigma2 = float(np.linalg.norm(w))
        v = w / sigma2
    return 1.01 * float(np.sqrt(sigma2))


def _mri(op: s.MRI) -> CompiledOperator:
    height, width = op.shape
    mask = _mask(op.mask, op.shape)
    params = {
        "mask": mask,
        "dft_h": gen.centred_dft_matrix(height),
        "dft_w": gen.centred_dft_matrix(width),
    }
    return CompiledOperator(
        "mri", "mri", op.shape, op.shape, "complex64", params, float(mask.max())
    )


def _mri_multicoil(op: s.MRIMulticoil) -> CompiledOperator:
    height, width = op.shape
    mask = _mask(op.mask, op.shape)
    if isinstance(op.coils, s.BirdcageCoils):
        coils = gen.birdcage_coils(op.coils.birdcage.count, op.shape)
    else:
        coils = op.coils.array
        if coils.dtype != np.complex64 or coils.ndim != 3 or tuple(coils.shape[1:]) != op.shape:
            raise OperatorError(
                ("coils",),
                f"coils must be complex64 [C, {height}, {width}], got "
                f"{coils.dtype.name} {list(coils.shape)}",
            )
        if not np.any(coils):
            raise OperatorError(("coils",), "coils are all zeros")
    params = {
        "mask": mask,
        "coils": np.stack([coils.real, coils.imag]).astype(np.float32),
        "dft_h": gen.centred_dft_matrix(height),
        "dft_w": gen.centred_dft_matrix(width),
    }
    # ‖A‖² ≤ max_mask · max_pixel Σ_c |S_c|² (the FFT is unitary).
    norm = float(np.sqrt(mask.max() * np.max(np.sum(np.abs(coils) ** 2, axis=0))))
    count = coils.shape[0]
    return CompiledOperator(
        "mri_multicoil",
        "mri_multicoil",
        op.shape,
        (count, height, width),
        "complex64",
        params,
        norm,
    )


def _ct(op: s.CT) -> CompiledOperator:
    height, width = op.shape
    if height != width:
        raise OperatorError(("shape",), "ct needs a square image")
    if isinstance(op.angles, s.UniformAngles):
        angles = gen.uniform_angles(op.angles.uniform.count)
    else:
        angles = np.asarray(op.angles, dtype=np.float64)
        if not np.all(np.isfinite(angles)):
            raise OperatorError(("angles",), "angles must be finite numbers of degrees")
    detectors = op.detectors or height
    geom = ct_geometry(angles, height, width, detectors)
    params: dict[str, np.ndarray] = {
        "fwd_index": geom.fwd_index,
        "fwd_weight": geom.fwd_weight,
        "adj_index": geom.adj_index,
        "adj_weight": geom.adj_weight,
        "ramp": geom.ramp,
        "fbp_scale": np.asarray(geom.fbp_scale, dtype=np.float32),
    }
    return CompiledOperator(
        "ct", "ct", op.shape, (len(angles), detectors), "float32", params, ct_norm(geom)
    )


_COMPILERS = {
    s.Denoising: _denoising,
    s.Inpainting: _inpainting,
    s.Blur: _blur,
    s.SuperResolution: _superresolution,
    s.CompressedSensing: _compressed_sensing,
    s.MRI: _mri,
    s.MRIMulticoil: _mri_multicoil,
    s.CT: _ct,
}
