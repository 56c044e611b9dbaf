r"""Linear physics objects: an operator spec bound to its parameter tensors.

:class:`Physics` reads like the maths (``y = A x + n``): ``A``,
``A_adjoint``, ``A_dagger``, ``noise``, ``compute_norm`` (power method) and
``adjointness_test``. It wraps the pure kernels of
:mod:`models.physics.functional` with parameters built by the service's own
compiler (``service.operators.compile``), so training, export and serving see
the very same masks, kernels and geometries.

Example
-------
>>> physics = Physics.from_json({"type": "inpainting", "shape": [8, 8],
...                              "mask": {"random": {"keep": 0.5, "seed": 0}}})
>>> x = torch.rand(2, 8, 8, dtype=torch.float64)
>>> bool(physics.adjointness_test(x) < 1e-12)
True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from models.physics import functional
from service.operators.compile import CompiledOperator, compile_operator
from service.operators.spec import Operator

__all__ = ["OPERATORS", "Physics"]

_OPERATOR = TypeAdapter(Operator)

#: One representative spec per operator family and kernel; every physics test is
#: parametrised over this list.
OPERATORS: dict[str, dict[str, Any]] = {
    "denoising": {"type": "denoising", "shape": [24, 20]},
    "inpainting": {
        "type": "inpainting",
        "shape": [24, 20],
        "mask": {"random": {"keep": 0.5, "seed": 1}},
    },
    "blur": {"type": "blur", "shape": [24, 20], "kernel": {"gaussian": {"sigma": 1.5, "size": 7}}},
    "superresolution": {"type": "superresolution", "shape": [24, 20], "factor": 2},
    "cs_dense": {"type": "compressed_sensing", "shape": [16, 12], "m": 60, "seed": 3},
    "cs_structured": {
        "type": "compressed_sensing",
        "shape": [24, 20],
        "m": 200,
        "seed": 3,
        "matrix": "structured",
    },
    "mri": {
        "type": "mri",
        "shape": [24, 20],
        "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.1, "seed": 0}},
    },
    "mri_multicoil": {
        "type": "mri_multicoil",
        "shape": [24, 20],
        "mask": {"cartesian": {"acceleration": 2, "center_fraction": 0.1, "seed": 0}},
        "coils": {"birdcage": {"count": 4}},
    },
    "ct": {"type": "ct", "shape": [24, 24], "angles": {"uniform": {"count": 30}}},
}


def _int32_csr(coo: torch.Tensor) -> torch.Tensor:
    """``coo`` as CSR with 32-bit indices: the product reads the whole matrix each time
    (1.6M entries for CT at 128x128, 50 views), so 8 bytes an entry instead of 12 is what
    it costs: A then Aᵀ on a batch of 4, 2 CPU cores, 1.87 -> 1.16 ms
    (``python -m bench.training_step``)."""
    csr = coo.to_sparse_csr()
    return torch.sparse_csr_tensor(
        csr.crow_indices().to(torch.int32),
        csr.col_indices().to(torch.int32),
        csr.values(),
        csr.shape,
        check_invariants=True,
    )


class Physics:
    """``y = A x + n`` for one operator, batched over a leading axis."""

    def __init__(self, compiled: CompiledOperator, dtype: torch.dtype = torch.float32) -> None:
        self.compiled = compiled
        self.kernel = compiled.kernel
        self.dtype = dtype
        self._params = {k: torch.from_numpy(np.array(v)) for k, v in compiled.params.items()}
        self.device = torch.device("cpu")
        self._frobenius2: float | None = None
        self._sparse: dict[torch.dtype, dict[str, torch.Tensor]] = {}

    def to(self, device: torch.device | str) -> Physics:
        """A copy whose parameter tensors live on ``device`` (inputs must live there too)."""
        moved = Physics(self.compiled, self.dtype)
        moved._params = {k: v.to(device) for k, v in self._params.items()}
        moved.device = torch.device(device)
        moved._frobenius2 = self._frobenius2
        return moved

    def frobenius2(self, probes: int = 8) -> float:
        r"""``‖A‖_F²``, the sum of the squared singular values, by Hutchinson's estimator
        :math:`\mathbb E_b \|A b\|^2` over ``probes`` seeded Gaussian images (the relative
        error is about :math:`\sqrt{2/(\text{probes}\cdot r)}` for ``r`` comparable singular
        values: well under 1% here). Cached per operator."""
        if self._frobenius2 is None:
            h, w = self.compiled.image_shape
            gen = torch.Generator().manual_seed(0)
            b = torch.randn(probes, h, w, generator=gen, dtype=torch.float64).to(self.device)
            self._frobenius2 = float((self.A(b) ** 2).sum()) / probes
        return self._frobenius2

    @classmethod
    def from_json(cls, spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> Physics:
        return cls(compile_operator(_OPERATOR.validate_python(spec)), dtype)

    def params(
        self, batch: int, dtype: torch.dtype | None = None, sparse: bool = False
    ) -> dict[str, torch.Tensor]:
        """Parameter tensors repeated over a batch of ``batch`` (floats cast to ``dtype``):
        the inputs of an exported graph.

        ``sparse`` (torch only: ONNX has no sparse product): CT's matrix and its transpose
        as one sparse CSR pair shared by the batch (``fwd_csr``, ``adj_csr``) in place of
        the padded-ELL arrays copied per batch element, which made CT training spend most
        of a step gathering and copying (``python -m bench.training_step``)."""
        dtype = dtype or self.dtype
        sparse = sparse and self.kernel == "ct"
        skip = ("fwd_index", "fwd_weight", "adj_index", "adj_weight") if sparse else ()
        out = {}
        for name, value in self._params.items():
            if name in skip:
                continue
            v = value.to(dtype) if value.is_floating_point() else value
            out[name] = v.unsqueeze(0).expand(batch, *v.shape).contiguous()
        if sparse:
            out |= self._csr(dtype)
        return out

    def _csr(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """CT's padded-ELL forward matrix as CSR, with its exact transpose (cached)."""
        if dtype not in self._sparse:
            index, weight = self._params["fwd_index"].cpu(), self._params["fwd_weight"].cpu()
            rows = torch.arange(index[..., 0].numel()).repeat_interleave(index.shape[-1])
            stored = weight.reshape(-1) != 0  # the padding of short rows
            pixels = self.compiled.image_shape[0] * self.compiled.image_shape[1]
            coo = torch.sparse_coo_tensor(
                torch.stack([rows[stored], index.reshape(-1)[stored]]),
                weight.reshape(-1)[stored].to(dtype),
                (index[..., 0].numel(), pixels),
                check_invariants=True,
            ).coalesce()
            with warnings.catch_warnings():  # "support is in beta": matmul is all we use
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                self._sparse[dtype] = {
                    "fwd_csr": _int32_csr(coo).to(self.device),
                    "adj_csr": _int32_csr(coo.t().coalesce()).to(self.device),
                }
        return self._sparse[dtype]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return functional.forward(self.kernel, x, self.params(x.shape[0], x.dtype, sparse=True))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return functional.adjoint(self.kernel, y, self.params(y.shape[0], y.dtype, sparse=True))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        return functional.pinv(self.kernel, y, self.params(y.shape[0], y.dtype, sparse=True))

    def noise(self, y: torch.Tensor, sigma: float, generator: torch.Generator | None = None):
        """Gaussian noise of std ``sigma`` on every real component."""
        # Drawn on the CPU (where the seeded generators live), then moved to ``y``.
        return y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)

    def __call__(self, x: torch.Tensor, sigma: float = 0.0, generator=None) -> torch.Tensor:
        y = self.A(x)
        return self.noise(y, sigma, generator) if sigma > 0 else y

    def compute_norm(self, iterations: int = 100, dtype: torch.dtype = torch.float64) -> float:
        """``‖A‖₂`` by the power method on ``AᵀA`` from a deterministic start."""
        h, w = self.compiled.image_shape
        v = torch.ones(1, h, w, dtype=dtype)
        params = self.params(1, dtype, sparse=True)
        value = 0.0
        for _ in range(iterations):
            v = v / torch.linalg.vector_norm(v)
            v = functional.adjoint(self.kernel, functional.forward(self.kernel, v, params), params)
            value = float(torch.linalg.vector_norm(v))
        return value**0.5

    def adjointness_test(self, x: torch.Tensor) -> float:
        """``|<Ax, y> - <x, Aᵀy>| / |<Ax, y>|`` for a random ``y``."""
        ax = self.A(x)
        y = torch.randn(ax.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(0))
        lhs = (ax * y).sum()
        rhs = (x * self.A_adjoint(y)).sum()
        return float((lhs - rhs).abs() / lhs.abs())
