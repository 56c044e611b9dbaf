"""Service configuration: one settings object read from ``EQUIRECON_*`` variables (DESIGN.md §9).

Nothing else in ``service/`` reads the environment. Settings that name a
backend this release does not ship (Celery broker, API keys) are refused at
construction, so a deployment never silently runs without what it asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MODEL_DIR", "Settings"]

#: The zoo shipped in the repository, found relative to this package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"

_NOT_YET = "is set, but {what} is not implemented yet (a later issue); unset {name} to run"


class Settings(BaseSettings):
    """Runtime knobs; each field reads ``EQUIRECON_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="EQUIRECON_", extra="forbid", frozen=True)

    model_dir: Path = Field(default=DEFAULT_MODEL_DIR, description="zoo with manifest.json")
    broker_url: str | None = Field(default=None, description="Celery broker (not implemented yet)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = Field(default=8, ge=1, le=256, description="requests per micro-batch")
    max_wait_ms: float = Field(default=5.0, ge=0.0, le=10_000.0, description="batch fill wait")
    max_queue: int = Field(default=256, ge=1, description="queued requests before 429")
    max_body_mb: float = Field(default=64.0, gt=0.0, description="request body limit")
    api_keys_file: Path | None = Field(default=None, description="reserved (not implemented yet)")
    result_ttl_s: float = Field(default=3600.0, gt=0.0, description="finished jobs kept this long")
    request_timeout_s: float = Field(
        default=60.0, ge=0.0, description="synchronous wait before answering 202"
    )

    @field_validator("broker_url")
    @classmethod
    def _no_broker_yet(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                _NOT_YET.format(what="the Celery dispatch backend", name="EQUIRECON_BROKER_URL")
            )
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _no_api_keys_yet(cls, value: Path | None) -> Path | None:
        if value is not None:
            raise ValueError(
                _NOT_YET.format(what="API-key authentication", name="EQUIRECON_API_KEYS_FILE")
            )
        return value

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
