"""A numpy FakeEngine and FakeZoo with the interfaces of service.engine / service.zoo.

The fake runs the operators of a few families in plain numpy and a handful of
toy reconstructors, so the batcher, dispatcher and worker can be tested with
exact failure injection and call recording. Reconstructions end to end use
the real Engine and zoo (see conftest.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.engine import ReconOptions, ReconOutput
from service.operators.compile import CompiledOperator

__all__ = ["FakeCard", "FakeEngine", "FakeZoo"]

FAMILIES = ["denoising", "inpainting", "superresolution", "mri"]


def _complex(m: np.ndarray) -> np.ndarray:
    return m[:, 0] + 1j * m[:, 1]  # [B, 2, n, n] -> [B, n, n]


def forward(kernel: str, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    if kernel == "denoising":
        return x.copy()
    if kernel == "inpainting":
        return params["mask"] * x
    if kernel == "superresolution":
        return params["down_h"] @ x @ np.swapaxes(params["down_w"], -1, -2)
    if kernel == "mri":
        fh, fw = _complex(params["dft_h"]), _complex(params["dft_w"])
        k = params["mask"] * (fh @ x @ np.swapaxes(fw, -1, -2))
        return np.stack([k.real, k.imag], axis=1).astype(np.float32)
    raise NotImplementedError(kernel)


def adjoint(kernel: str, y: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    if kernel == "denoising":
        return y.copy()
    if kernel == "inpainting":
        return params["mask"] * y
    if kernel == "superresolution":
        return np.swapaxes(params["down_h"], -1, -2) @ y @ params["down_w"]
    if kernel == "mri":
        fh, fw = _complex(params["dft_h"]), _complex(params["dft_w"])
        k = params["mask"] * (y[:, 0] + 1j * y[:, 1])
        return np.real(np.conj(np.swapaxes(fh, -1, -2)) @ k @ np.conj(fw)).astype(np.float32)
    raise NotImplementedError(kernel)


@dataclass
class FakeEngine:
    """Engine double: ``adjoint`` (Aᵀy), ``tilted`` (Aᵀy times a column ramp: not
    equivariant), ``tv`` (Aᵀy, reports ``min(max_iter, 3)`` iterations and an
    automatic λ that depends on y) and
    ``poison`` (fails any batch holding an all-zero measurement)."""

    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    options_seen: list[list[ReconOptions]] = field(default_factory=list)
    gate: threading.Event | None = None  # when set by a test, reconstruct waits on it
    fail_forward: bool = False  # when set by a test, forward raises an unexpected error

    def forward(self, kernel: str, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append(("forward", kernel, len(x)))
        if self.fail_forward:
            raise RuntimeError("secret internals")
        return forward(kernel, x.astype(np.float32), params).astype(np.float32)

    def reconstruct(
        self, model: str, kernel: str, y: np.ndarray, params: dict[str, np.ndarray],
        norms: np.ndarray, options: list[ReconOptions],
    ) -> ReconOutput:
        self.calls.append(("reconstruct", model, len(y)))
        self.options_seen.append(list(options))
        assert len(options) == len(y) == len(norms)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if model == "poison" and any(not np.any(s) for s in y):
            raise ValueError("poisoned measurement")
        x = adjoint(kernel, y, params).astype(np.float32)
        if model == "tilted":
            x = x * np.linspace(0.5, 1.5, x.shape[-1], dtype=np.float32)
        iterations = [min(o.max_iter, 3) if model == "tv" else 1 for o in options]
        # tv's automatic λ depends on y, as the real discrepancy rule does.
        lam = [(o.lam if o.lam is not None else 0.01 * float(np.abs(s).mean()))
               if model == "tv" else 0.0 for o, s in zip(options, y, strict=True)]
        return ReconOutput(x, np.array(iterations), np.array(lam, np.float32))


@dataclass(frozen=True)
class FakeCard:
    id: str
    kind: str
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    title: str = "fake"
    description: str = "a test double"

    @property
    def raw(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "families": self.families}

    def check(self, op: CompiledOperator) -> None:
        if op.family not in self.families:
            raise ValueError(f"model {self.id} does not accept {op.family} operators")


class FakeZoo:
    def __init__(self) -> None:
        self.files = {f"graphs/{kernel}.forward.onnx": "" for kernel in FAMILIES}
        self.cards = {
            c.id: c
            for c in (
                FakeCard("adjoint", "adjoint"),
                FakeCard("tilted", "adjoint"),
                FakeCard("tv", "tv"),
                FakeCard("poison", "adjoint"),
                FakeCard("denoise-only", "adjoint", ["denoising"]),
            )
        }
