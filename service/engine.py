"""The compute engine: onnxruntime sessions over the zoo's graphs.

One :class:`Engine` per device holds a session for every graph in the zoo
(CUDA execution provider when present, CPU otherwise) and runs batches:
``forward`` applies an operator, ``reconstruct`` runs a model. One-shot
models (``adjoint``, ``pinv``) are one graph call; ``tv`` calls its exported
PDHG block until every sample's relative change is under its tolerance,
dropping converged samples from the batch as it goes.
"""

from __future__ import annotations

import functools
import itertools
import threading
from dataclasses import astuple, dataclass

import numpy as np
import onnxruntime as ort

from service.zoo import Zoo, ZooError

__all__ = [
    "LAMBDA_PER_SIGMA",
    "Engine",
    "ReconOptions",
    "ReconOutput",
    "choose_lambda",
    "select_providers",
    "step_ratio",
    "take_rows",
]

#: Auto-λ rule: λ = κ_kernel · σ/‖A‖ (the noise level of the normalised data
#: term), floored at LAMBDA_FLOOR. κ was calibrated by ``bench/calibrate_tv.py``
#: (best PSNR over a λ sweep on the validation images, 128x128).
LAMBDA_PER_SIGMA: dict[str, float] = {
    "denoising": 1.0,
    "inpainting": 0.5,
    "blur": 0.125,
    "superresolution": 0.5,
    "cs_dense": 0.25,
    "cs_structured": 0.25,
    "mri": 0.25,
    "mri_multicoil": 0.25,
    "ct": 0.0625,
}
LAMBDA_FLOOR = 1e-5  # only for σ ≈ 0 (CT's calibrated λ at σ = 0.1 is 7.8e-5)
#: σ assumed when a request gives no noise level: this fraction of RMS(y).
DEFAULT_RELATIVE_SIGMA = 0.01
#: TV starts from the pseudo-inverse, except where that amplifies noise.
_TV_START = {"blur": "adjoint"}
_NO_LOWER_BOUND = np.float32(-3.0e38)


@dataclass
class ReconOptions:
    """Per-request reconstruction settings (TV ones are ignored by one-shot models)."""

    lam: float | None = None
    max_iter: int = 300
    tol: float = 1e-4
    nonneg: bool = True
    sigma: float | None = None


@dataclass
class ReconOutput:
    x: np.ndarray  # [B, H, W] float32
    iterations: np.ndarray  # [B] int64
    lam: np.ndarray  # [B] float32, the λ used (0 for one-shot models)


def select_providers(device: str) -> list[str]:
    """onnxruntime providers for ``device`` ("auto" picks CUDA when available)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("EQUIRECON_DEVICE=cuda but onnxruntime has no CUDA provider")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def choose_lambda(kernel: str, sigma: float, norm: float) -> float:
    """The automatic TV weight for noise std ``sigma`` (see :data:`LAMBDA_PER_SIGMA`)."""
    return max(LAMBDA_PER_SIGMA[kernel] * sigma / norm, LAMBDA_FLOOR)


#: Most bytes of operator tensors (params) that one reconstruction call takes at once.
CHUNK_BYTES = 160 * 2**20
#: Bounds of the PDHG step ratio (models/recon/tv.py).
RATIO_RANGE = (0.25, 64.0)


def step_ratio(
    x0_norm: np.ndarray, lam: np.ndarray, sigma: np.ndarray, inv_norm: np.ndarray,
    pixels: int, measurements: int,
) -> np.ndarray:
    """PDHG's ``s = sqrt(τ/σ)`` per sample: the square root of the primal scale over the dual.

    The primal scale is ``‖x₀‖`` (the starting image); the dual one is what the dual
    variables grow to: ``λ sqrt(2n)`` for the TV part, and the normalised residual,
    about ``σ sqrt(m)/‖A‖``, for the data part. Iterations to within 0.1 dB of the
    converged PSNR, swept over s = 1..64 (bench/README.md): CT 60 views σ=0.1 best at
    s≈16 (this rule: 17; s = 1 needed > 800), inpainting σ=0.01 at 8 (rule: 5),
    denoising σ=0.1 at 1-2 (rule: 1.5), MRI 4x σ=0.05 at 4 (rule: 2.5).
    """
    dual = lam * np.sqrt(2.0 * pixels) + sigma * np.sqrt(measurements) * inv_norm
    tiny = np.finfo(np.float32).tiny
    ratio = np.sqrt(x0_norm / np.maximum(dual, tiny))
    return np.clip(ratio, *RATIO_RANGE).astype(np.float32)


class Engine:
    """onnxruntime sessions for every graph of a zoo, on one device."""

    def __init__(self, zoo: Zoo, device: str = "auto") -> None:
        self.zoo = zoo
        self.providers = select_providers(device)
        # Sessions by zoo-relative path: graphs/{kernel}.{role}.onnx for the
        # operator graphs, whatever a card names for a learned model.
        self._sessions: dict[str, ort.InferenceSession] = {
            rel: ort.InferenceSession(
                str(zoo.path(rel)), sess_options=_options(rel), providers=self.providers
            )
            for rel in zoo.files
            if rel.startswith("graphs/") and rel.endswith(".onnx")
        }
        # The last operator tensors repeated to a batch: the (name, source) pairs and
        # the repeated tensors; see _repeated.
        self._last_repeated: tuple[
            tuple[tuple[str, np.ndarray], ...], dict[str, np.ndarray]
        ] = ((), {})
        self._lock = threading.Lock()

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``graphs/{graph}.onnx`` (``graph`` = "kernel.role") or a zoo-relative path.

        Operator tensors shared by the batch (leading axis 1) are repeated to its rows
        here (:meth:`_repeated`): the graphs take one operator per row."""
        rel = graph if graph.endswith(".onnx") else f"graphs/{graph}.onnx"
        try:
            session = self._sessions[rel]
        except KeyError as exc:
            raise ZooError(f"{rel} is not in the zoo") from exc
        wanted = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in feeds.items() if k in wanted}
        batch = feeds["y" if "y" in feeds else "x"].shape[0]
        shared = {k: v for k, v in feeds.items() if v.ndim and v.shape[0] == 1}
        if batch > 1 and shared:
            feeds |= self._repeated(shared, batch)
        return session.run(None, feeds)

    def _repeated(self, shared: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        """``shared`` repeated to ``batch`` rows. The last copy is kept, and a call with
        the same arrays and at most its rows takes its leading rows (a view): a scored
        CT request's chunks of ``A T_g x̂`` and of ``f``, and the next request on the
        same angles, share one copy (52 MB a row) instead of making their own."""
        with self._lock:
            sources, value = self._last_repeated
            if (
                value
                and next(iter(value.values())).shape[0] >= batch
                and len(sources) == len(shared)
                and all(shared.get(name) is array for name, array in sources)
            ):
                return {k: v[:batch] for k, v in value.items()}
            value = {k: np.repeat(v, batch, axis=0) for k, v in shared.items()}
            for v in value.values():
                v.flags.writeable = False  # read by concurrent calls
            self._last_repeated = (tuple(shared.items()), value)
            return value

    def forward(self, kernel: str, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """``A x`` for a batch: x [B, H, W] -> [B, *graph measurement shape]; ``params``
        as :meth:`reconstruct` takes them."""
        x = _f32(x)
        chunks = _chunks(params, x.shape[0])
        if len(chunks) > 1:
            return np.concatenate([
                self.forward(kernel, x[rows], take_rows(params, rows)) for rows in chunks
            ])
        return self._run(f"{kernel}.forward", {"x": x, **params})[0]

    def reconstruct(
        self,
        model: str,
        kernel: str,
        y: np.ndarray,
        params: dict[str, np.ndarray],
        norms: np.ndarray,
        options: list[ReconOptions],
    ) -> ReconOutput:
        """Run ``model`` on a batch of measurements of one kernel.

        ``params``: each operator tensor with a leading axis of B (an operator per row)
        or of 1 (one operator for every row, as a scored request's evaluations have:
        no copy per row is made before a graph call needs it).

        A batch whose operator tensors exceed :data:`CHUNK_BYTES` runs in chunks: CT's
        are 63 MB a sample at 128x128, and its gathers cost time in proportion to the
        batch anyway (1.5 ms for one forward, 9.8 ms for 8), so chunks bound the memory
        (a D4-scored CT request is a batch of 8) at no cost in time.
        """
        chunks = _chunks(params, y.shape[0])
        if len(chunks) > 1:
            parts = [
                astuple(
                    self.reconstruct(
                        model, kernel, y[rows], take_rows(params, rows),
                        norms[rows], options[rows],
                    )
                )
                for rows in chunks
            ]
            return ReconOutput(*(np.concatenate(field) for field in zip(*parts, strict=True)))
        card = self.zoo.cards[model]
        y = _f32(y)
        batch = y.shape[0]
        if card.kind == "tv":
            return self._tv(kernel, y, params, np.asarray(norms, np.float32), options)
        # Every other model is one graph call: (y, params[, inv_norm]) -> x.
        inv_norm = (1.0 / np.asarray(norms, np.float32)).astype(np.float32)
        x = self._run(card.graphs[kernel], {"y": y, **params, "inv_norm": inv_norm})[0]
        return ReconOutput(x, np.ones(batch, np.int64), np.zeros(batch, np.float32))

    def _tv(
        self,
        kernel: str,
        y: np.ndarray,
        params: dict[str, np.ndarray],
        norms: np.ndarray,
        options: list[ReconOptions],
    ) -> ReconOutput:
        batch = y.shape[0]
        sigma = np.array([_sigma(o, y[i]) for i, o in enumerate(options)], np.float32)
        lam = np.array(
            [
                o.lam if o.lam is not None else choose_lambda(kernel, float(s), float(n))
                for o, s, n in zip(options, sigma, norms, strict=True)
            ],
            np.float32,
        )
        lower = np.array([0.0 if o.nonneg else _NO_LOWER_BOUND for o in options], np.float32)
        inv_norm = (1.0 / norms).astype(np.float32)
        start = _TV_START.get(kernel, "pinv")
        x = self._run(f"{kernel}.{start}", {"y": y, **params})[0]
        if start == "adjoint":
            x = x * (inv_norm**2)[:, None, None]
        x = np.maximum(x, lower[:, None, None]).astype(np.float32)
        x0_norm = np.sqrt(np.square(x, dtype=np.float64).sum(axis=(1, 2)))
        ratio = step_ratio(x0_norm, lam, sigma, inv_norm, x[0].size, y[0].size)
        state = {
            "x": x,
            "xbar": x.copy(),
            "p": np.zeros((batch, 2, *x.shape[1:]), np.float32),
            "q": np.zeros_like(y),
        }
        iterations = np.zeros(batch, np.int64)
        max_iter = np.array([o.max_iter for o in options])
        tol = np.array([o.tol for o in options])
        fixed = {**params, "y": y, "inv_norm": inv_norm, "lam": lam, "lower": lower, "ratio": ratio}
        active = np.arange(batch)
        sliced = fixed  # every sample is active: no copy
        while active.size:
            feeds = {**{k: v[active] for k, v in state.items()}, **sliced}
            x_out, xbar_out, p_out, q_out, delta = self._run(f"{kernel}.tv", feeds)
            for key, value in zip(
                ("x", "xbar", "p", "q"), (x_out, xbar_out, p_out, q_out), strict=True
            ):
                state[key][active] = value
            iterations[active] += _BLOCK
            keep = (delta >= tol[active]) & (iterations[active] < max_iter[active])
            if not keep.all():
                # Operator tensors can be large (CT: 63 MB a sample), so they are sliced
                # when the active set shrinks, not copied again for every block call.
                active = active[keep]
                sliced = take_rows(fixed, active)
        return ReconOutput(state["x"], iterations, lam)


@functools.cache  # once per process
def _shared_cpu_arena() -> None:
    """Register one CPU memory arena for every session of the process.

    Each session's own arena keeps its high-water mark for good, so the resident
    memory became the sum of every graph's peak (1931 MiB after one request per
    model, mostly CT intermediates); one shared arena holds the largest single
    peak: 1122 MiB, with the same latencies measured side by side (bench/README.md).
    """
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))


def _options(rel: str) -> ort.SessionOptions:
    """Session options of one graph.

    onnxruntime's pool threads spin for a while after each run, waiting for the next.
    That pays only in the TV loop, which calls its block graph back to back (TV is
    15-40% slower without it); after any other graph the spinning steals the cores
    that the API's event loop needs to read the next requests: with it off, a learned
    model over HTTP served 54 -> 67 requests/s to one client and 58 -> 74 to 16
    (2 cores; bench/README.md).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    _shared_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    if not rel.endswith(".tv.onnx"):
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


#: PDHG iterations per exported block (models/recon/tv.py BLOCK_ITERATIONS).
_BLOCK = 10


def take_rows(tensors: dict[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
    """The given rows of per-row tensors; a tensor shared by every row (leading axis 1)
    stays as it is."""
    return {k: v if v.shape[0] == 1 else v[rows] for k, v in tensors.items()}


def _chunks(params: dict[str, np.ndarray], batch: int) -> list[slice]:
    """The rows of each graph call: as many as :data:`CHUNK_BYTES` of operator tensors
    allow, spread evenly (7 rows at most 3 a call: 3, 2, 2, not 3, 3, 1)."""
    per_row = sum(v[:1].nbytes for v in params.values())
    calls = -(-batch // max(1, CHUNK_BYTES // max(per_row, 1)))
    ends = [batch * i // calls for i in range(calls + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(ends)]


def _sigma(options: ReconOptions, y: np.ndarray) -> float:
    if options.sigma is not None:
        return options.sigma
    return DEFAULT_RELATIVE_SIGMA * float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)
