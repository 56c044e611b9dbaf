"""Settings: defaults, the EQUIRECON_ prefix, scale-out settings, no other env reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import DEFAULT_MODEL_DIR, Settings

SERVICE = Path(__file__).resolve().parents[2] / "service"


def test_defaults() -> None:
    s = Settings()
    assert s.model_dir == DEFAULT_MODEL_DIR == SERVICE.parent / "models" / "zoo"
    assert (s.device, s.max_batch, s.max_wait_ms, s.max_queue) == ("auto", 8, 5.0, 256)
    assert (s.max_body_mb, s.result_ttl_s, s.request_timeout_s) == (64.0, 3600.0, 60.0)
    assert s.broker_url is None and s.api_keys_file is None
    assert s.max_body_bytes == 64 * 1024 * 1024


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQUIRECON_MAX_BATCH", "3")
    monkeypatch.setenv("EQUIRECON_DEVICE", "cpu")
    monkeypatch.setenv("MAX_BATCH", "99")  # no prefix: ignored
    s = Settings()
    assert (s.max_batch, s.device) == (3, "cpu")


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQUIRECON_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()


def test_scale_out_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": []}', encoding="utf-8")
    monkeypatch.setenv("EQUIRECON_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("EQUIRECON_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    s = Settings()
    assert (s.broker_url, s.api_keys_file, s.cuda_visible_devices) == (
        "redis://localhost:6379/0", keys, "1")
    assert s.visibility_timeout_s > s.job_timeout_s  # a running job is never redelivered


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("EQUIRECON_BROKER_URL", "amqp://localhost", "only a Redis broker"),
        ("EQUIRECON_API_KEYS_FILE", "/nonexistent/keys.json", "does not exist"),
    ],
)
def test_bad_scale_out_settings_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, why: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=why):
        Settings()


def test_nothing_else_reads_the_environment() -> None:
    pattern = re.compile(r"os\.environ|getenv|environ\[")
    readers = [
        str(p.relative_to(SERVICE)) for p in SERVICE.rglob("*.py")
        if p.name != "config.py" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert readers == []
