"""The referral settings one server runs with: its identity, its partners, its delivery policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from app.config import Settings
from app.referral.validation import Tie

__all__ = ["ReferralConfig", "TokenSource"]

# Where the outgoing channel gets a bearer token for a partner address (None: send without one).
# The access-control work plugs a real source in here; the default reads one static setting.
TokenSource = Callable[[str], Awaitable[str | None]]


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
    token: TokenSource = field(default=lambda _address: _no_token())

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferralConfig:
        static = settings.outbound_bearer_token

        async def token(_address: str) -> str | None:
            return static

        return cls(
            identifiers=_ties(settings.organization_identifiers),
            endpoint=(settings.endpoint or settings.base_url or "").rstrip("/"),
            partners=frozenset(p.rstrip("/") for p in settings.partner_endpoints),
            partner_clients=_bindings(settings.partner_clients),
            cc=settings.referral_cc,
            max_attempts=settings.delivery_max_attempts,
            retry_base_seconds=settings.delivery_retry_base_seconds,
            retry_max_seconds=settings.delivery_retry_max_seconds,
            timeout_seconds=settings.delivery_timeout_seconds,
            poll_seconds=settings.delivery_poll_seconds,
            lease_seconds=settings.delivery_lease_seconds,
            max_entries=settings.message_max_entries,
            token=token,
        )

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff: base, 2·base, 4·base, … capped at the maximum."""
        return float(min(self.retry_base_seconds * 2 ** max(attempts - 1, 0), self.retry_max_seconds))


def _bindings(pairs: tuple[str, ...]) -> dict[str, str]:
    bound = {}
    for pair in pairs:
        address, separator, client_id = pair.rpartition("=")
        if not separator or not address or not client_id:
            raise ValueError(f"BACKPATH_PARTNER_CLIENTS: '{pair}' is not address=client_id")
        bound[address.rstrip("/")] = client_id
    return bound


async def _no_token() -> str | None:
    return None
