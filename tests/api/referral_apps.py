"""In-process BackPath apps set up as one organisation of a referral exchange, each on a database
of its own (their delivery workers must not share an outbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.config import Settings
from app.main import create_app
from app.referral.medcom import Envelope, Party, message_bundle, provenance
from app.services.context import FhirContext
from app.storage.outbox import inbox, outbox
from app.storage.schema import resource_version
from tests.referral_data import Org, register


@dataclass
class Running:
    org: Org
    address: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def context(self) -> FhirContext:
        context: FhirContext = self.app.state.fhir
        return context

    async def snapshot(self) -> tuple[int, int, int]:
        """(last change sequence, inbox rows, outbox rows): equal before and after means untouched."""
        async with self.context.store.reading() as session:
            connection = session.connection
            last = (await connection.execute(select(func.max(resource_version.c.seq)))).scalar_one()
            received = (await connection.execute(select(func.count()).select_from(inbox))).scalar_one()
            sent = (await connection.execute(select(func.count()).select_from(outbox))).scalar_one()
        return int(last or 0), int(received), int(sent)


@asynccontextmanager
async def running(
    settings: Settings,
    database_url: str,
    org: Org,
    address: str,
    partners: Mapping[str, Org],
    headers: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    """An app that is `org` at `address`, with `partners` (address → organisation) registered; its
    client sends `headers` (e.g. a token) with every request. Failed deliveries wait an hour before
    the next try, so tests see the outbox as it was queued."""
    configured = replace(
        settings,
        database_url=database_url,
        base_url=address,
        endpoint=address,
        organization_identifiers=tuple(org.identity_setting().split(",")),
        partner_endpoints=tuple(partners),
        delivery_retry_base_seconds=3600.0,
        delivery_retry_max_seconds=3600.0,
        delivery_timeout_seconds=1.0,
        **overrides,
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=address, headers=dict(headers or {})
    ) as client:
        await register(client, org, None)
        for partner_address, partner in partners.items():
            await register(client, partner, partner_address)
        yield Running(org, address, app, client)


async def connect(*apps: Running) -> None:
    """Let the apps' delivery workers reach each other in-process (by address), as servers would;
    delivery then happens when a test calls `settle`, so what it sees is deterministic."""
    for app in apps:
        worker = app.app.state.referrals.worker
        await worker.halt()
        await worker.client.aclose()
        mounts = {f"{other.address}/": httpx.ASGITransport(app=other.app) for other in apps if other is not app}
        worker.client = httpx.AsyncClient(mounts=mounts, timeout=10)


async def settle(*apps: Running, rounds: int = 20) -> None:
    """Deliver until every outbox is empty of due messages (each round a worker pass)."""
    for _ in range(rounds):
        attempted = 0
        for app in apps:
            attempted += await app.app.state.referrals.worker.deliver_due()
        if not attempted:
            return


def message(
    sender: Org,
    sender_address: str,
    receiver: Org,
    receiver_address: str,
    payload: list[dict[str, Any]],
    *,
    event: str = "new-referral",
    focus: tuple[str, ...] = (),
    message_id: str,
    decision: str | None = None,
) -> dict[str, Any]:
    """A well-formed message from `sender` to `receiver`, built with BackPath's own builders."""
    from app.referral import codes

    us = Party(sender.resource, sender_address)
    envelope = Envelope(
        message_id=message_id,
        event={"system": codes.MESSAGE_EVENT, "code": event},
        sender=us,
        primary=Party(receiver.resource, receiver_address),
        timestamp="2026-03-02T10:00:00.000Z",
        focus=focus,
        definition=f"{codes.MESSAGE_DEFINITION}{event}",
        reason={"system": codes.DECISION, "code": decision} if decision else None,
    )
    return message_bundle(envelope, payload, [provenance(f"{message_id}-p", message_id, "new-message", us, "2026-03-02T10:00:00.000Z")])
