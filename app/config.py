"""Settings, all from environment variables (documented in README), read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["Settings"]

_ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _env_optional_bool(name: str) -> bool | None:
    value = os.environ.get(name)
    return None if value is None or not value.strip() else _env_bool(name, False)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
def _cds_clients() -> str:
    """The CDS client allowlist: JSON in the variable, or `@path` to a JSON file."""
    value = os.environ.get("BACKPATH_CDS_CLIENTS", "")
    return Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value


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
    # Bearer tokens from an external authorization server (see README, "Security").
    auth_issuer: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_AUTH_ISSUER") or None)
    auth_jwks_url: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_AUTH_JWKS_URL") or None)
    auth_jwks_file: Path | None = field(default_factory=lambda: _env_path("BACKPATH_AUTH_JWKS_FILE"))
    auth_audience: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_AUTH_AUDIENCE") or None)
    auth_authorize_url: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_AUTH_AUTHORIZE_URL") or None)
    auth_token_url: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_AUTH_TOKEN_URL") or None)
    auth_leeway_seconds: int = field(default_factory=lambda: _env_int("BACKPATH_AUTH_LEEWAY_SECONDS", 30))
    # The built-in SMART Backend Services token endpoint.
    token_signing_key_file: Path | None = field(default_factory=lambda: _env_path("BACKPATH_TOKEN_SIGNING_KEY_FILE"))
    backend_clients_file: Path | None = field(default_factory=lambda: _env_path("BACKPATH_BACKEND_CLIENTS_FILE"))
    token_lifetime_seconds: int = field(default_factory=lambda: _env_int("BACKPATH_TOKEN_LIFETIME_SECONDS", 300))
    cors_origins: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_CORS_ORIGINS"))
    audit: bool = field(default_factory=lambda: _env_bool("BACKPATH_AUDIT", True))
    # Referrals and messages (README "Referrals and messages"): who this server is, whom it talks to,
    # and how hard it tries to deliver.
    organization_identifiers: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_ORGANIZATION_IDENTIFIERS"))
    endpoint: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_ENDPOINT") or None)
    partner_endpoints: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_PARTNER_ENDPOINTS"))
    # address=client_id pairs: the authenticated client that may send as each partner address.
    partner_clients: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_PARTNER_CLIENTS"))
    referral_cc: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_REFERRAL_CC"))
    delivery_max_attempts: int = field(default_factory=lambda: _env_int("BACKPATH_DELIVERY_MAX_ATTEMPTS", 8))
    delivery_retry_base_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_RETRY_BASE_SECONDS", 2.0))
    delivery_retry_max_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_RETRY_MAX_SECONDS", 300.0))
    delivery_timeout_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_TIMEOUT_SECONDS", 10.0))
    delivery_poll_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_POLL_SECONDS", 1.0))
    delivery_lease_seconds: float = field(default_factory=lambda: _env_float("BACKPATH_DELIVERY_LEASE_SECONDS", 30.0))
    outbound_bearer_token: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_OUTBOUND_BEARER_TOKEN") or None)
    # SMART Backend Services towards partners: our client id there, the private key we sign client
    # assertions with, the scope we ask for, and address=token_url pairs that skip discovery.
    outbound_client_id: str | None = field(default_factory=lambda: os.environ.get("BACKPATH_OUTBOUND_CLIENT_ID") or None)
    outbound_client_key_file: Path | None = field(default_factory=lambda: _env_path("BACKPATH_OUTBOUND_CLIENT_KEY_FILE"))
    outbound_scope: str = field(default_factory=lambda: os.environ.get("BACKPATH_OUTBOUND_SCOPE") or "system/MessageHeader.c")
    outbound_token_urls: tuple[str, ...] = field(default_factory=lambda: _env_list("BACKPATH_OUTBOUND_TOKEN_URLS"))
    message_max_entries: int = field(default_factory=lambda: _env_int("BACKPATH_MESSAGE_MAX_ENTRIES", 200))

    # CDS Hooks: the regional PlanDefinition id a call applies unless it names another; client JWT
    # authentication (None: on, except in development mode); the allowlist of CDS clients (JSON);
    # the timeout of fetches from a client's fhirServer or jku; whether those may use plain http
    # (None: only in development mode); the clock skew allowed for the JWT's exp and iat.
    cds_pathway: str = field(default_factory=lambda: os.environ.get("BACKPATH_CDS_PATHWAY") or "nl-zel")
    cds_client_auth: bool | None = field(default_factory=lambda: _env_optional_bool("BACKPATH_CDS_CLIENT_AUTH"))
    cds_clients: str = field(default_factory=_cds_clients)
    cds_fetch_timeout: float = field(default_factory=lambda: _env_float("BACKPATH_CDS_FETCH_TIMEOUT", 3.0))
    cds_allow_http: bool | None = field(default_factory=lambda: _env_optional_bool("BACKPATH_CDS_ALLOW_HTTP"))
    cds_jwt_leeway: int = field(default_factory=lambda: _env_int("BACKPATH_CDS_JWT_LEEWAY", 30))
    # Pages (README "Pages"): how long a patient's form link works, and where the LHC-Forms files are.
    form_link_ttl_seconds: int = field(default_factory=lambda: _env_int("BACKPATH_FORM_LINK_TTL", 3 * 24 * 3600))
    lforms_dir: Path = field(default_factory=lambda: _env_path("BACKPATH_LFORMS_DIR") or _ROOT / "node_modules" / "lforms" / "dist" / "lforms")

    @property
    def audience(self) -> str | None:
        """The `aud` every access token must carry: this server's FHIR base URL unless set."""
        return self.auth_audience or self.base_url

    @property
    def token_endpoint_enabled(self) -> bool:
        return self.token_signing_key_file is not None and self.backend_clients_file is not None

    def problems(self) -> list[str]:
        """Why this configuration must not serve (empty when it may): production needs an issuer."""
        found = []
        if (self.outbound_client_id is None) != (self.outbound_client_key_file is None):
            found.append("BACKPATH_OUTBOUND_CLIENT_ID and BACKPATH_OUTBOUND_CLIENT_KEY_FILE go together (our backend client at the partners)")
        if self.audit and _in_memory_sqlite(self.database_url):
            found.append("the audit trail's writer process needs a database file or server: an in-memory SQLite database is one per process (or BACKPATH_AUDIT=0)")
        if self.dev_mode:
            return found
        if not self.auth_issuer and not self.token_endpoint_enabled:
            found.append(
                "no token issuer: set BACKPATH_AUTH_ISSUER with BACKPATH_AUTH_JWKS_URL or BACKPATH_AUTH_JWKS_FILE, "
                "or BACKPATH_TOKEN_SIGNING_KEY_FILE with BACKPATH_BACKEND_CLIENTS_FILE (or BACKPATH_DEV_MODE=1 on 127.0.0.1)"
            )
        if self.auth_issuer and not (self.auth_jwks_url or self.auth_jwks_file):
            found.append("BACKPATH_AUTH_ISSUER needs BACKPATH_AUTH_JWKS_URL or BACKPATH_AUTH_JWKS_FILE")
        if not self.audience:
            found.append("no token audience: set BACKPATH_BASE_URL (or BACKPATH_AUTH_AUDIENCE)")
        if self.token_endpoint_enabled and not self.base_url:
            found.append("the token endpoint needs BACKPATH_BASE_URL (its own URL is the assertions' audience)")
        if not self.audit:
            found.append("BACKPATH_AUDIT=0 is for development mode only")
        return found


def _in_memory_sqlite(database_url: str) -> bool:
    try:
        url = make_url(database_url)
    except ArgumentError:  # not a URL: opening the database says so
        return False
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
