"""What every benchmark script shares: servers, problems, statistics, results, machine facts.

Benchmarks print figures and write JSON; they never pass or fail on a time
(STYLE.md rule 10). Each script's ``main(argv)`` returns its results dict,
so ``bench/run_all.py`` and the quick test can call it in-process.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
from pydantic import TypeAdapter

from service.engine import Engine
from service.operators.compile import CompiledOperator, compile_operator
from service.operators.spec import NoiseSpec, Operator
from service.zoo import ModelCard, Zoo

__all__ = [
    "RESULTS",
    "ROOT",
    "ZOO",
    "Server",
    "celery_worker",
    "compile_spec",
    "learned_cards",
    "machine",
    "md_table",
    "redis_server",
    "results_dir",
    "serve",
    "serve_all",
    "session_median_ms",
    "shared_engine",
    "simulate",
    "stats",
    "training_jobs",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
ZOO = ROOT / "models" / "zoo"
_OPERATOR = TypeAdapter(Operator)


# ---- results ----------------------------------------------------------------


def results_dir(out: str | Path | None, quick: bool) -> Path:
    """Where a script writes: ``out`` if given, else bench/results (quick runs: .../quick)."""
    path = Path(out) if out is not None else RESULTS / "quick" if quick else RESULTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (atomically: a .tmp file, then a rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def write_results(out: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """``out/NAME.json`` (the figures) and ``out/NAME.md`` (the table) of one benchmark."""
    write_json(out / f"{name}.json", result)
    (out / f"{name}.md").write_text(markdown)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p99, mean and min of a list of durations, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples")
    return {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "min_ms": round(float(ms.min()), 4),
    }


def session_median_ms(session: Any, feed: dict[str, np.ndarray], repeats: int) -> float:
    """Median milliseconds of ``repeats`` runs of an onnxruntime ``session`` on ``feed``,
    after one run that warms it up."""
    session.run(None, feed)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - began)
    return stats(seconds)["median_ms"]


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats keep what the caller formatted."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table, or "-" when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


# ---- the machine ---------------------------------------------------------------


#: Heavy jobs of this project that share the CPU with a benchmark (and disturb it).
BUSY_JOBS = ("models.train", "models.evaluate", "models.export", "pytest")


def training_jobs() -> list[str]:
    """Command lines of running ``models.train``/``evaluate``/``export`` and pytest
    processes (other than this one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if any(job in cmd for job in BUSY_JOBS) and "pgrep" not in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # an optional package that is absent (or broken) has no version
        return None
    return str(getattr(mod, "__version__", "unknown"))


def machine() -> dict[str, Any]:
    """Date, CPU, versions, and whether a model training/evaluation job shares the CPU."""
    training = training_jobs()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "skimage": _version("skimage"),
        "training_jobs": training,
        "note": (
            "measured while a model training/evaluation job used the CPU: timings are disturbed"
            if training
            else "no model training/evaluation job was running"
        ),
    }


# ---- problems -----------------------------------------------------------------


def compile_spec(spec: dict[str, Any]) -> CompiledOperator:
    """The compiled operator of a JSON operator spec (as the API would build it)."""
    return compile_operator(_OPERATOR.validate_python(spec))


def simulate(
    engine: Engine, spec: dict[str, Any], image: np.ndarray, sigma: float, seed: int = 0
) -> np.ndarray:
    """Wire-layout measurements ``A x + n`` (what ``POST /v1/simulate`` would answer)."""
    op = compile_spec(spec)
    params = {k: v[None] for k, v in op.params.items()}
    y = engine.forward(op.kernel, image[None].astype(np.float32), params)[0]
    return add_noise_wire(op.from_graph(y), sigma, seed, op)


def add_noise_wire(y: np.ndarray, sigma: float, seed: int, op: CompiledOperator) -> np.ndarray:
    from service.noise import add_noise

    return add_noise(y, NoiseSpec(sigma=sigma, seed=seed), op)


@functools.lru_cache(maxsize=1)
def shared_engine() -> Engine:
    """One CPU Engine over the zoo per process (scripts run in one process share it)."""
    return Engine(Zoo.load(ZOO), "cpu")


def learned_cards(zoo_dir: Path = ZOO, *, one_per_family: bool = True) -> list[ModelCard]:
    """The zoo's model cards of kind "learned" (none until a trained model is exported);
    by default one per operator family, preferring the EI-trained (``*-ei``) one."""
    cards = sorted(
        (c for c in Zoo.load(zoo_dir).cards.values() if c.kind == "learned"),
        key=lambda c: (c.families[0], not c.id.endswith("-ei"), c.id),
    )
    if not one_per_family:
        return cards
    chosen: dict[str, ModelCard] = {}
    for card in cards:
        chosen.setdefault(card.families[0], card)
    return list(chosen.values())


# ---- servers ------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports.

    The probe sockets stay open until all are drawn: closed one by one, the kernel may
    hand the same port out twice, and two servers started on it at once would leave one
    failed to bind and the other answering both URLs (CI saw a benchmark read the memory
    of an exited server that way).
    """
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    (port,) = free_ports(1)
    return port


@dataclass
class Server:
    """A running API process: its base URL, PID and start-to-ready time."""

    url: str
    pid: int
    ready_s: float
    process: subprocess.Popen[bytes]


@contextmanager
def serve(
    settings: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[Server]:
    """Start the API in a fresh process on a free loopback port; stop it afterwards.

    With ``settings`` None this is exactly ``python -m service.cli serve`` (the
    embedded default, settings from the environment); otherwise
    ``python -m bench.server`` builds ``Settings(**settings)`` and
    ``create_app(settings)``. ``env`` adds variables to the server's environment
    (never ``EQUIRECON_*``: those are cleared so the settings are what they say).
    """
    with serve_all([(settings, env or {})], timeout_s=timeout_s) as servers:
        yield servers[0]


@contextmanager
def serve_all(
    configs: Sequence[tuple[dict[str, Any] | None, dict[str, str]]], *, timeout_s: float = 120.0
) -> Iterator[list[Server]]:
    """:func:`serve` for several ``(settings, env)`` at once: all launched, then awaited."""
    with ExitStack() as stack:
        launched = []
        for (settings, env), port in zip(configs, free_ports(len(configs)), strict=True):
            if settings is None:
                cmd = [sys.executable, "-m", "service.cli", "serve", "--log-level", "warning"]
            else:
                cmd = [sys.executable, "-m", "bench.server", "--settings", json.dumps(settings)]
            cmd += ["--host", "127.0.0.1", "--port", str(port)]
            environ = {k: v for k, v in os.environ.items() if not k.startswith("EQUIRECON_")}
            environ.update(env)
            # The log goes to a file: a pipe nobody reads could fill up and stall the server.
            log = stack.enter_context(tempfile.TemporaryFile())
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=log,
                                    stderr=subprocess.STDOUT)
            stack.callback(_stop, proc)
            launched.append((f"http://127.0.0.1:{port}", proc, t0, log))
        servers = [Server(url, proc.pid, wait_ready(url, proc, t0, timeout_s, log), proc)
                   for url, proc, t0, log in launched]
        for _, proc, _, log in launched:
            _check_running(proc, log)  # a server that lost its port would have exited by now
        yield servers


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def redis_server() -> Iterator[str]:
    """``redis-server`` on a free loopback port, configured as docker-compose.yml runs it
    (AOF, fsync every second, noeviction), its data in a temporary folder; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
             "--appendonly", "yes", "--appendfsync", "everysec",
             "--maxmemory-policy", "noeviction", "--save", "",
             "--logfile", str(Path(folder) / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.perf_counter() + 30
            while not _pong(port):
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield url
        finally:
            _stop(proc)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def celery_worker(broker_url: str, name: str = "bench") -> Iterator[subprocess.Popen[bytes]]:
    """``python -m service.cli worker`` (``equirecon worker``, threads pool, default
    settings) on ``broker_url``; the API's /readyz turns 200 once it has registered."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EQUIRECON_")}
    environ["EQUIRECON_BROKER_URL"] = broker_url
    cmd = [sys.executable, "-m", "service.cli", "worker", "--name", name, "--pool", "threads",
           "--log-level", "warning"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            _stop(proc)


def _check_running(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    if proc.poll() is not None:
        log.seek(0)
        err = log.read().decode(errors="replace")
        raise RuntimeError(f"the server exited with {proc.returncode}:\n{err[-2000:]}")


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], t0: float, timeout_s: float, log: IO[bytes]
) -> float:
    """Poll ``/readyz`` every 10 ms; seconds from ``t0`` to the first 200."""
    with httpx.Client(timeout=2.0) as client:
        while True:
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            _check_running(proc, log)
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"the server was not ready after {timeout_s} s")
            time.sleep(0.01)
