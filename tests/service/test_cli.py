"""The equirecon command against the live server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main
from tests.service.live import LiveServer


def test_models(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--url", live.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["tv", "tv"] for line in lines)


def test_simulate_and_submit(
    live: LiveServer, tmp_path: Path, image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    op_file = tmp_path / "op.json"
    op_file.write_text(json.dumps({"type": "blur", "shape": [32, 32],
                                   "kernel": {"gaussian": {"sigma": 1.0, "size": 5}}}))
    png = tmp_path / "x.png"
    Image.fromarray(np.round(255 * image).astype(np.uint8)).save(png)
    y, x = tmp_path / "y.npy", tmp_path / "x.npy"
    assert main(["simulate", "--url", live.url, "--operator", f"@{op_file}", "--image", str(png),
                 "--out", str(y), "--noise-sigma", "0.01"]) == 0
    assert np.load(y, allow_pickle=False).shape == (32, 32)
    assert main(["submit", "--url", live.url, "--model", "tv", "--operator", f"@{op_file}",
                 "--measurements", str(y), "--out", str(x), "--noise-sigma", "0.01",
                 "--group", "flips"]) == 0
    out = capsys.readouterr().out
    assert "equivariance score" in out and "group flips, 3 transforms" in out
    assert np.load(x, allow_pickle=False).shape == (32, 32)


def test_errors_print_the_field_and_exit_1(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    y = tmp_path / "y.npy"
    np.save(y, np.zeros((8, 8), np.float32))
    status = main(["submit", "--url", live.url, "--model", "tv", "--operator",
                   '{"type": "denoising", "shape": [16, 16]}', "--measurements", str(y),
                   "--out", str(tmp_path / "x.npy")])
    assert status == 1
    assert "body.measurements: measurements must be float32 [16, 16]" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_non_redis_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    monkeypatch.setenv("EQUIRECON_BROKER_URL", "amqp://localhost")
    assert main([command]) == 2
    assert "only a Redis broker is supported" in capsys.readouterr().err


def test_a_worker_needs_a_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EQUIRECON_BROKER_URL", raising=False)
    assert main(["worker"]) == 2
    assert "needs EQUIRECON_BROKER_URL" in capsys.readouterr().err


def test_hash_key_prints_a_key_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from service.auth import hash_key

    assert main(["hash-key", "--tenant", "acme"]) == 0
    key_line, entry = capsys.readouterr().out.splitlines()
    key = key_line.rsplit(" ", 1)[1]
    assert json.loads(entry) == {"tenant": "acme", "sha256": hash_key(key)}


def test_bad_operator_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--operator", "{nope", "--image", "x.npy", "--out", "y.npy"])
    assert info.value.code == 2 and "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not an array", b"\x93NUMPY garbage"])
def test_an_unreadable_measurements_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    bad = tmp_path / "y.npy"
    bad.write_bytes(content)
    operator = '{"type": "denoising", "shape": [8, 8]}'
    status = main(["submit", "--model", "tv", "--operator", operator,
                   "--measurements", str(bad), "--out", str(tmp_path / "x.npy")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"equirecon: cannot read {bad}") and "Traceback" not in err
    assert not (tmp_path / "x.npy").exists()

