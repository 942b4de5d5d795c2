"""The referral settings one server runs with: its identity, its partners, its delivery policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from app.config import Settings
from app.referral.validation import Tie
from app.security.backend import load_signing_key
from app.services.referrals.outbound_tokens import PartnerTokens, StaticToken, TokenSource

__all__ = ["ReferralConfig", "TokenSource"]


def _ties(values: tuple[str, ...]) -> frozenset[Tie]:
    ties = set()
    for value in values:
        system, _, code = value.rpartition("|")
        if not system or not code:
            raise ValueError(f"BACKPATH_ORGANIZATION_IDENTIFIERS: '{value}' is not system|value")
        ties.add((system, code))
    return frozenset(ties)


@dataclass(frozen=True)
class ReferralConfig:
    identifiers: frozenset[Tie]  # this server's organisation (e.g. GLN and SOR, or AGB and URA)
    endpoint: str  # where partners deliver to us: MessageHeader.source.endpoint of what we send
    partners: frozenset[str]  # partner endpoint addresses we send to and accept messages from
    # partner address → the client id whose token a message from that address must come with
    partner_clients: Mapping[str, str] = field(default_factory=dict)
    cc: tuple[str, ...] = ()  # Organization references every new referral is copied to
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    lease_seconds: float = 30.0
    max_entries: int = 200
    token: TokenSource = field(default_factory=lambda: StaticToken(None))

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferralConfig:
        return cls(
            identifiers=_ties(settings.organization_identifiers),
            endpoint=(settings.endpoint or settings.base_url or "").rstrip("/"),
            partners=frozenset(p.rstrip("/") for p in settings.partner_endpoints),
            partner_clients=_pairs(settings.partner_clients, "BACKPATH_PARTNER_CLIENTS", "address=client_id"),
            cc=settings.referral_cc,
            max_attempts=settings.delivery_max_attempts,
            retry_base_seconds=settings.delivery_retry_base_seconds,
            retry_max_seconds=settings.delivery_retry_max_seconds,
            timeout_seconds=settings.delivery_timeout_seconds,
            poll_seconds=settings.delivery_poll_seconds,
            lease_seconds=settings.delivery_lease_seconds,
            max_entries=settings.message_max_entries,
            token=_token_source(settings),
        )

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff: base, 2·base, 4·base, … capped at the maximum."""
        return float(min(self.retry_base_seconds * 2 ** max(attempts - 1, 0), self.retry_max_seconds))


def _pairs(pairs: tuple[str, ...], variable: str, shape: str, *, value_is_url: bool = False) -> dict[str, str]:
    """`address=value` settings, by address (without a trailing slash); a URL value may hold `=`."""
    bound = {}
    for pair in pairs:
        address, separator, value = pair.partition("=") if value_is_url else pair.rpartition("=")
        if not separator or not address or not value:
            raise ValueError(f"{variable}: '{pair}' is not {shape}")
        bound[address.rstrip("/")] = value
    return bound


def _token_source(settings: Settings) -> TokenSource:
    """Backend-services tokens per partner when our client id and key are set; else the static token."""
    if settings.outbound_client_id is None or settings.outbound_client_key_file is None:
        return StaticToken(settings.outbound_bearer_token)
    return PartnerTokens(
        load_signing_key(settings.outbound_client_key_file.read_bytes()),
        client_id=settings.outbound_client_id,
        scope=settings.outbound_scope,
        token_urls=_pairs(settings.outbound_token_urls, "BACKPATH_OUTBOUND_TOKEN_URLS", "address=token_url", value_is_url=True),
        timeout=settings.delivery_timeout_seconds,
    )
