"""Settings, all from environment variables (documented in README), read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]

_ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


def _content_dirs() -> tuple[Path, ...]:
    value = os.environ.get("BACKPATH_CONTENT_DIRS")
    if value is not None:
        return tuple(Path(p) for p in value.split(os.pathsep) if p)
    return (_ROOT / "plandefinitions", _ROOT / "fhir_profiles")


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=lambda: os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./backpath.db"))
    base_url: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_BASE_URL") or None)
    max_body_bytes: int = field(default_factory=lambda: _env_int("BACKPATH_MAX_BODY_BYTES", 10 * 1024 * 1024))
    default_count: int = field(default_factory=lambda: _env_int("BACKPATH_DEFAULT_COUNT", 20))
    max_count: int = field(default_factory=lambda: _env_int("BACKPATH_MAX_COUNT", 1000))
    content_dirs: tuple[Path, ...] = field(default_factory=_content_dirs)
    log_level: str = field(default_factory=lambda: os.environ.get("BACKPATH_LOG_LEVEL", "INFO"))
    dev_mode: bool = field(default_factory=lambda: _env_bool("BACKPATH_DEV_MODE", False))
    # Referrals and messages (README "Referrals and messages"): who this server is, whom it talks to,
    # and how hard it tries to deliver.
    organization_identifiers: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_ORGANIZATION_IDENTIFIERS"))
    endpoint: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_ENDPOINT") or None)
    partner_endpoints: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_PARTNER_ENDPOINTS"))
    referral_cc: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_REFERRAL_CC"))
    delivery_max_attempts: int = field(default_factory=lambda: _env_int("BACKPATH_DELIVERY_MAX_ATTEMPTS", 8))
    delivery_retry_base_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_RETRY_BASE_SECONDS", 2.0))
    delivery_retry_max_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_RETRY_MAX_SECONDS", 300.0))
    delivery_timeout_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_TIMEOUT_SECONDS", 10.0))
    delivery_poll_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_POLL_SECONDS", 1.0))
    delivery_lease_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_LEASE_SECONDS", 30.0))
    outbound_bearer_token: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_OUTBOUND_BEARER_TOKEN") or None)
    message_max_entries: int = field(default_factory=lambda: _env_int("BACKPATH_MESSAGE_MAX_ENTRIES", 200))
