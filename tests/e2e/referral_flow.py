"""Shared steps of the two-server referral tests: set up a sender and a receiver, wait for a
Task to reach a state, read what each side holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.referral import codes
from tests.referral_data import FHIR_JSON, Org, Practice, register
from tests.servers import Server


@dataclass
class Site:
    """One organisation's server and its records of itself; `headers` go with every request the
    test makes there (a production-mode server wants a token)."""

    org: Org
    server: Server
    headers: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        client = self.server.client()
        client.headers.update(self.headers)
        return client


def configure(sender: Site, receiver: Site, **env: str) -> None:
    """Each server is its organisation and the other's partner."""
    for site, other in ((sender, receiver), (receiver, sender)):
        site.server.env.update(
            {
                "BACKPATH_ORGANIZATION_IDENTIFIERS": site.org.identity_setting(),
                "BACKPATH_PARTNER_ENDPOINTS": other.server.url,
                **env,
            }
        )


def start_pair(servers: Callable[[str], Server], sender: tuple[Org, str], receiver: tuple[Org, str], **env: str) -> tuple[Site, Site]:
    """Two real servers, each on a database of its own (named by the second element), each its
    organisation and the other's partner; started."""
    first, second = Site(sender[0], servers(sender[1])), Site(receiver[0], servers(receiver[1]))
    configure(first, second, **env)
    first.server.start()
    second.server.start()
    return first, second


async def introduce(sender: Site, receiver: Site) -> Practice:
    """Store each organisation at both servers (the other with its Endpoint); the GP practice's
    practitioner and role at the sender. Returns the practice."""
    for site, other in ((sender, receiver), (receiver, sender)):
        async with site.client() as client:
            await register(client, site.org, None)
            await register(client, other.org, other.server.url)
    practice = Practice(sender.org)
    async with sender.client() as client:
        await practice.store(client)
    return practice


async def referral_task(client: httpx.AsyncClient, referral_id: str) -> dict[str, Any] | None:
    found = (await client.get("/Task", params={"identifier": f"{codes.REFERRAL_ID}|{referral_id}"}, headers=FHIR_JSON)).json()
    tasks = [e["resource"] for e in found.get("entry", []) if e.get("search", {}).get("mode") == "match"]
    assert len(tasks) <= 1, f"{len(tasks)} Tasks for one referral"
    return tasks[0] if tasks else None


async def wait_for(site: Site, referral_id: str, done: Callable[[dict[str, Any]], bool], seconds: float = 30) -> dict[str, Any]:
    """The referral Task at `site` once `done(task)` holds (fails with the last state seen)."""
    deadline = time.monotonic() + seconds
    task: dict[str, Any] | None = None
    async with site.client() as client:
        while time.monotonic() < deadline:
            task = await referral_task(client, referral_id)
            if task is not None and done(task):
                return task
            await asyncio.sleep(0.2)
    raise AssertionError(f"{site.server.name}: the referral Task never got there; last seen {task}\n{site.server.log_tail()}")


def status_is(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda task: task.get("status") in statuses


def referral_id(request: dict[str, Any]) -> str:
    return next(i["value"] for i in request["identifier"] if i["system"] == codes.REFERRAL_ID)


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await client.get(f"/{reference}", headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def operation(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=FHIR_JSON) if body is not None else await client.post(path, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def output(task: dict[str, Any], kind: str) -> str:
    return next(o["valueReference"]["reference"] for o in task.get("output", []) if o.get("type", {}).get("text") == kind)
