"""Real processes for the scale-out tests: a ``redis-server`` and ``equirecon worker``s."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

__all__ = ["ROOT", "RedisServer", "WorkerProcess", "free_port"]

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


class RedisServer:
    """``redis-server`` on a free loopback port with its data (AOF on) in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it via apt)")
        self.binary, self.dir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction",
             "--save", "", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                assert self.process is not None and self.process.poll() is None, "redis died"
                return False

        try:
            _until(up, "redis-server did not start", 30)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        """SIGTERM: Redis flushes the AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


class WorkerProcess:
    """``equirecon worker`` (as ``python -m service.cli worker``) in a subprocess."""

    def __init__(self, name: str, env: dict[str, str], log: Path, concurrency: int = 4) -> None:
        self.name = name
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--name", name,
             "--concurrency", str(concurrency), "--log-level", "info"],
            cwd=ROOT, env=os.environ | env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, client: redis.Redis, timeout: float = 90.0) -> WorkerProcess:
        def ready() -> bool:
            assert self.process.poll() is None, f"worker {self.name} exited; see its log"
            return bool(client.exists(f"equirecon:worker:{self.name}"))

        _until(ready, f"worker {self.name} did not become ready", timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is acknowledged."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()
