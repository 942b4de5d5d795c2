"""Which token our deliveries carry, by configuration: backend-services tokens per partner when our
client id and key are set, else the static token, else none; the id and key go together."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.config import Settings
from app.services.referrals.config import ReferralConfig
from app.services.referrals.outbound_tokens import PartnerTokens
from tests.tokens import KeyPair


def _settings(**changes: object) -> Settings:
    unset: dict[str, object] = {"dev_mode": True, "outbound_bearer_token": None, "outbound_client_id": None, "outbound_client_key_file": None}
    return replace(Settings(), **{**unset, **changes})  # type: ignore[arg-type]


def test_our_client_id_and_key_make_tokens_per_partner(tmp_path: Path) -> None:
    key = tmp_path / "client-key.pem"
    key.write_bytes(KeyPair("EC").pem())
    settings = _settings(outbound_client_id="gp-backpath", outbound_client_key_file=key, outbound_bearer_token="static")
    assert settings.problems() == []
    assert isinstance(ReferralConfig.from_settings(settings).token, PartnerTokens)  # it wins over the static token


async def test_without_them_the_static_token_or_none_is_sent() -> None:
    assert await ReferralConfig.from_settings(_settings(outbound_bearer_token="static")).token("http://partner.test") == "static"
    assert await ReferralConfig.from_settings(_settings()).token("http://partner.test") is None


def test_a_client_id_without_a_key_is_refused_even_in_development_mode(tmp_path: Path) -> None:
    [problem] = _settings(outbound_client_id="gp-backpath").problems()
    assert "BACKPATH_OUTBOUND_CLIENT_KEY_FILE" in problem
    [problem] = _settings(outbound_client_key_file=tmp_path / "key.pem").problems()
    assert "BACKPATH_OUTBOUND_CLIENT_ID" in problem
