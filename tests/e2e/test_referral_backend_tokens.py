"""Referral messages between two real production-mode servers (no development mode) that
authenticate to each other the SMART Backend Services way: each registers the other's backend
client (its public JWKS, as `backpath outbound-jwks` prints it) and binds the other's address to that
client id; each delivery gets its token from the partner's own `/auth/token`. A key the partner
never registered gets no token: the message waits in the outbox and nothing reaches the partner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.referral_flow import (
    Site,
    configure,
    introduce,
    operation,
    referral_id,
    referral_task,
    status_is,
    wait_for,
)
from tests.referral_data import FHIR_JSON, dk_org, parameters, patient, post, referral
from tests.servers import ROOT, Server
from tests.tokens import Issuer, KeyPair

MESSAGE_SCOPE = "system/MessageHeader.c"  # what $process-message asks of a sender


def _outbound_jwks(key_file: Path) -> dict[str, Any]:
    """Our backend client's public JWKS, from the command partners are told to run."""
    printed = subprocess.run(
        [sys.executable, "-m", "app.cli", "outbound-jwks", "--key", str(key_file)], cwd=ROOT, capture_output=True, check=True, text=True
    )
    jwks: dict[str, Any] = json.loads(printed.stdout)
    return jwks


class _Party:
    """One server's keys and names: its token signing key, its backend-client key and id."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.client_id = f"{name}-backpath"
        self.client_key = folder / f"{name}-client-key.pem"
        self.client_key.write_bytes(KeyPair("EC").pem())
        self.signing_key = folder / f"{name}-signing-key.pem"
        self.signing_key.write_bytes(KeyPair("RSA").pem())
        self.clients_file = folder / f"{name}-clients.json"

    def register(self, client_id: str, jwks: dict[str, Any]) -> None:
        """The partner's backend client at this server: its key and the most it may be granted."""
        self.clients_file.write_text(json.dumps({"clients": [{"client_id": client_id, "jwks": jwks, "scope": MESSAGE_SCOPE}]}))

    def environment(self, issuer: Issuer, partner: Server, partner_client: str) -> dict[str, str]:
        return {
            "BACKPATH_DEV_MODE": "0",
            "BACKPATH_AUTH_ISSUER": issuer.name,  # the test's own calls come with this issuer's tokens
            "BACKPATH_AUTH_JWKS_FILE": str(issuer.jwks_file),
            "BACKPATH_TOKEN_SIGNING_KEY_FILE": str(self.signing_key),
            "BACKPATH_BACKEND_CLIENTS_FILE": str(self.clients_file),
            "BACKPATH_PARTNER_CLIENTS": f"{partner.url}={partner_client}",
            "BACKPATH_OUTBOUND_CLIENT_ID": self.client_id,
            "BACKPATH_OUTBOUND_CLIENT_KEY_FILE": str(self.client_key),
        }


def _secure_pair(servers: Callable[[str], Server], folder: Path, names: tuple[str, str], *, gp_key_registered: bool) -> tuple[Site, Site, _Party]:
    """A GP practice and a spine unit in production mode, each the other's registered backend client
    (the GP with a stranger's key unless `gp_key_registered`); started. Returns the spine's keys too."""
    issuer = Issuer(folder / "harness-jwks.json")
    gp = Site(dk_org("gp-practice"), servers(names[0]))
    spine = Site(dk_org("spine-unit"), servers(names[1]))
    configure(gp, spine)
    gp_keys, spine_keys = _Party(folder, "gp"), _Party(folder, "spine")
    stranger = folder / "stranger-key.pem"
    stranger.write_bytes(KeyPair("EC").pem())
    spine_keys.register(gp_keys.client_id, _outbound_jwks(gp_keys.client_key if gp_key_registered else stranger))
    gp_keys.register(spine_keys.client_id, _outbound_jwks(spine_keys.client_key))
    gp.server.env.update(gp_keys.environment(issuer, spine.server, spine_keys.client_id))
    spine.server.env.update(spine_keys.environment(issuer, gp.server, gp_keys.client_id))
    for site in (gp, spine):
        token = issuer.token("system/*.cruds", aud=site.server.url, exp=int(time.time()) + 3600)
        site.headers.update({"Authorization": f"Bearer {token}"})
        site.server.start()
    return gp, spine, spine_keys


async def _refer(gp: Site, spine: Site, role: str) -> str:
    async with gp.client() as client:
        person = await post(client, patient("DK"))
        request = await post(client, referral(f"Patient/{person['id']}", role, spine.org.reference, country="DK"))
    return referral_id(request)


async def _outbox(server: Server, exchange: str) -> list[tuple[object, ...]]:
    return await server.rows("SELECT message_id, status, attempts, last_error FROM outbox WHERE exchange = :e ORDER BY seq", e=exchange)


@pytest.fixture
def secure_pair(servers: Callable[[str], Server], tmp_path: Path) -> tuple[Site, Site, _Party]:
    return _secure_pair(servers, tmp_path, ("bs_gp", "bs_spine"), gp_key_registered=True)


@pytest.fixture
def stranger_pair(servers: Callable[[str], Server], tmp_path: Path) -> tuple[Site, Site, _Party]:
    return _secure_pair(servers, tmp_path, ("bs_gp_stranger", "bs_spine_stranger"), gp_key_registered=False)


async def test_partners_deliver_with_tokens_from_each_others_token_endpoint(secure_pair: tuple[Site, Site, _Party]) -> None:
    gp, spine, spine_keys = secure_pair
    practice = await introduce(gp, spine)
    rid = await _refer(gp, spine, practice.role_reference)

    sent = await wait_for(gp, rid, status_is("received"))  # acknowledged ok, with a token from the spine unit
    assert sent["businessStatus"]["coding"][0]["code"] == "delivered"
    received = await wait_for(spine, rid, status_is("received"))
    async with spine.client() as client:  # the answer travels back with a token from the GP's endpoint
        accepted = await operation(client, f"/Task/{received['id']}/$accept", parameters(start={"valueDateTime": "2026-04-01T09:00:00Z"}))
        assert accepted["status"] == "accepted"
    await wait_for(gp, rid, status_is("accepted"))

    # The spine unit restarts with a new signing key: the GP's cached token is refused (401) and
    # forgotten, and the retry delivers with a new one.
    spine.server.stop()
    spine_keys.signing_key.write_bytes(KeyPair("RSA").pem())
    spine.server.start()
    again = await _refer(gp, spine, practice.role_reference)
    await wait_for(gp, again, status_is("received"))
    [(_, status, attempts, _)] = await _outbox(gp.server, again)
    assert status == "delivered" and int(str(attempts)) >= 2
    await wait_for(spine, again, status_is("received"))


async def test_an_unregistered_key_gets_no_token_and_the_message_reaches_nothing(stranger_pair: tuple[Site, Site, _Party]) -> None:
    gp, spine, _ = stranger_pair
    practice = await introduce(gp, spine)
    rid = await _refer(gp, spine, practice.role_reference)
    for _ in range(100):  # until the worker has tried, been refused a token, and tried again
        [(message_id, status, attempts, last_error)] = await _outbox(gp.server, rid)
        if int(str(attempts)) >= 2:
            break
        await asyncio.sleep(0.1)
    assert status == "pending" and int(str(attempts)) >= 2  # retried like a transport error
    assert "no access token" in str(last_error) and "invalid_client" in str(last_error)
    task = await wait_for(gp, rid, status_is("requested"))
    assert task["businessStatus"]["coding"][0]["code"] == "queued"

    async with spine.client() as client:
        assert await referral_task(client, rid) is None
        requests = (await client.get("/ServiceRequest", params={"identifier": rid}, headers=FHIR_JSON)).json()
        assert requests.get("total", len(requests.get("entry", []))) == 0
    assert await spine.server.rows("SELECT count(*) FROM inbox WHERE message_id = :m", m=message_id) == [(0,)]
    gp_log = gp.server.log_tail()
    assert "no access token from a partner" in gp_log and "invalid_client" in gp_log
    for log in (gp_log, spine.server.log_tail()):
        assert "eyJ" not in log  # neither the assertion nor a token (every JWT starts so)
