"""The runtime never imports torch or models/ (DESIGN.md §2), even while serving."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys

    import numpy as np

    from service.client import EquiReconClient
    from service.config import Settings
    from service.main import create_app
    from tests.service.live import LiveServer

    with LiveServer(create_app(Settings(device="cpu"))) as server:
        with EquiReconClient(server.url) as client:
            assert client.models()
            op = {"type": "inpainting", "shape": [16, 16], "mask": {"random": {"keep": 0.6}}}
            y = client.simulate(op, np.full((16, 16), 0.5, np.float32), {"sigma": 0.01})
            result = client.reconstruct("tv", op, y, noise={"sigma": 0.01})
            assert result.status == "succeeded", result
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "models"))
    print("LOADED", loaded)
""")


def test_serving_imports_neither_torch_nor_models() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
