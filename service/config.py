"""Service configuration: one settings object read from ``EQUIRECON_*`` variables (DESIGN.md §9).

Nothing else in ``service/`` reads the environment. The dispatch backend
follows ``broker_url``: unset, jobs run in this process; ``redis://...``, jobs
and their state go through Redis to ``equirecon worker`` processes (Celery).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MODEL_DIR", "Settings"]

#: The zoo shipped in the repository, found relative to this package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"


class Settings(BaseSettings):
    """Runtime knobs; each field reads ``EQUIRECON_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="EQUIRECON_", extra="forbid", frozen=True, populate_by_name=True
    )

    model_dir: Path = Field(default=DEFAULT_MODEL_DIR, description="zoo with manifest.json")
    broker_url: str | None = Field(
        default=None, description="redis://host:port/db: Celery + Redis backend (else in-process)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = Field(default=8, ge=1, le=256, description="requests per micro-batch")
    max_wait_ms: float = Field(
        default=5.0, ge=0.0, le=10_000.0,
        description="longest a partial batch waits for requests already on their way "
        "(none announced: it goes at once)",
    )
    max_queue: int = Field(default=256, ge=1, description="queued requests before 429")
    max_body_mb: float = Field(default=64.0, gt=0.0, description="request body limit")
    api_keys_file: Path | None = Field(
        default=None, description="JSON file of sha256-hashed API keys, each with its tenant"
    )
    result_ttl_s: float = Field(default=3600.0, gt=0.0, description="finished jobs kept this long")
    request_timeout_s: float = Field(
        default=60.0, ge=0.0, description="synchronous wait before answering 202"
    )
    job_timeout_s: float = Field(
        default=600.0, gt=0.0, description="longest a job may compute before it fails"
    )
    max_deliveries: int = Field(
        default=3, ge=1, le=100,
        description="Celery: deliveries of a job (worker crashes) before it is dead-lettered",
    )

    cuda_visible_devices: str | None = Field(
        default=None,
        validation_alias=AliasChoices("cuda_visible_devices", "CUDA_VISIBLE_DEVICES"),
        description="the GPU a worker is pinned to (read by CUDA; named in the worker's name)",
    )

    @field_validator("broker_url")
    @classmethod
    def _redis_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("only a Redis broker is supported: redis://host:port/db")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"API keys file {value} does not exist")
        return value

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def visibility_timeout_s(self) -> float:
        """How long a delivered, unacknowledged job stays invisible before redelivery.

        Above the longest allowed job (plus a margin for the queue inside a
        worker), so a job that is still running is never handed out twice.
        """
        return self.job_timeout_s * 1.5 + 5.0

    @property
    def claim_ttl_s(self) -> float:
        """How long a queued job's inputs (the claim check in Redis) are kept."""
        return max(self.result_ttl_s, 86_400.0)
