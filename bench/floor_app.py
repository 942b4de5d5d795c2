"""The *floor* for bench/run_core.py: the least a server can do to serve the same rows.

A raw ASGI app (no framework) that stores and serves the same JSON rows in the same `resource` and
`resource_version` tables as BackPath, through the same engine factory (so the same driver, pool
and SQLite settings: WAL, synchronous=NORMAL, busy timeout, BEGIN IMMEDIATE for writes), under
the same uvicorn settings. No validation, no FHIR logic, no token index:

    GET  /Patient/{id}   the stored JSON bytes (404 when absent)
    POST /Patient        insert version 1 under a new uuid + its history row; 201 with the body
    PUT  /Patient/{id}   version + 1 (or version 1 if absent) + a history row; 200 with the body
    POST /               a Bundle: every entry's resource inserted in one transaction
                         (uuid ids; a PUT entry keeps the id of its "Type/id" url); 200 with
                         a response Bundle of locations

Run: DATABASE_URL=sqlite+aiosqlite:///floor.db python bench/floor_app.py --port 8091
It creates its two tables on start when they are missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for app.storage

from app.storage.engine import WRITE, create_engine  # the same driver settings as ours
from app.storage.schema import metadata, resource, resource_version  # the same tables

_JSON = [(b"content-type", b"application/fhir+json; charset=utf-8")]

_READ = select(resource.c.content).where(resource.c.type == bindparam("t"), resource.c.id == bindparam("i"))
_INSERT = insert(resource)
_HISTORY = insert(resource_version)
_BUMP = (
    update(resource)
    .where(resource.c.type == bindparam("t"), resource.c.id == bindparam("i"))
    .values(version=resource.c.version + 1, last_updated=bindparam("now"), content=bindparam("body"))
    .returning(resource.c.version)
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Floor:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        if method == "GET" and len(parts) == 2:
            await self._read(parts[0], parts[1], send)
        elif method == "POST" and len(parts) == 1 and parts[0]:
            await self._create(parts[0], await _body(receive), send)
        elif method == "PUT" and len(parts) == 2:
            await self._update(parts[0], parts[1], await _body(receive), send)
        elif method == "POST" and parts == [""]:
            await self._bundle(await _body(receive), send)
        else:
            await _respond(send, 404, b'{"error":"no such route"}')

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.engine = create_engine(self.url)
                async with self.engine.connect() as connection:
                    connection = await connection.execution_options(**{WRITE: True})
                    async with connection.begin():
                        await connection.run_sync(
                            lambda sync: metadata.create_all(sync, tables=[resource, resource_version])
                        )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.engine is not None:
                    await self.engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, resource_type: str, resource_id: str, send: Any) -> None:
        async with self.engine.connect() as connection:
            content = (await connection.execute(_READ, {"t": resource_type, "i": resource_id})).scalar()
        if content is None:
            await _respond(send, 404, b'{"error":"not found"}')
        else:
            await _respond(send, 200, content)

    async def _create(self, resource_type: str, body: bytes, send: Any) -> None:
        resource_id, now = str(uuid.uuid4()), _now()
        async with self._writing() as connection:
            await connection.execute(_INSERT, _row(resource_type, resource_id, now, body))
            await connection.execute(_HISTORY, _version(resource_type, resource_id, 1, now, "POST", body))
        await _respond(send, 201, body, [(b"location", f"{resource_type}/{resource_id}/_history/1".encode())])

    async def _update(self, resource_type: str, resource_id: str, body: bytes, send: Any) -> None:
        now = _now()
        async with self._writing() as connection:
            params = {"t": resource_type, "i": resource_id, "now": now, "body": body}
            version = (await connection.execute(_BUMP, params)).scalar()
            if version is None:
                version = 1
                await connection.execute(_INSERT, _row(resource_type, resource_id, now, body))
            await connection.execute(
                _HISTORY, _version(resource_type, resource_id, version, now, "PUT", body)
            )
        await _respond(send, 201 if version == 1 else 200, body)

    async def _bundle(self, body: bytes, send: Any) -> None:
        now, rows, versions, locations = _now(), [], [], []
        for entry in orjson.loads(body).get("entry") or []:
            content = orjson.dumps(entry["resource"])
            method, url = entry["request"]["method"], entry["request"]["url"]
            resource_type, _, given_id = url.partition("/")
            resource_id = given_id if method == "PUT" and given_id else str(uuid.uuid4())
            rows.append(_row(resource_type, resource_id, now, content))
            versions.append(_version(resource_type, resource_id, 1, now, method, content))
            locations.append(
                {
                    "response": {
                        "status": "201 Created",
                        "location": f"{resource_type}/{resource_id}/_history/1",
                    }
                }
            )
        async with self._writing() as connection:
            if rows:
                await connection.execute(_INSERT, rows)
                await connection.execute(_HISTORY, versions)
        await _respond(
            send,
            200,
            orjson.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": locations}),
        )

    def _writing(self) -> Any:
        return _Transaction(self.engine)


class _Transaction:
    """engine.connect() + the WRITE option (BEGIN IMMEDIATE on SQLite) + begin(), like Store.writing()."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def __aenter__(self) -> Any:
        self.context = self.engine.connect()
        connection = await self.context.__aenter__()
        connection = await connection.execution_options(**{WRITE: True})
        self.transaction = connection.begin()
        await self.transaction.__aenter__()
        return connection

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.transaction.__aexit__(*exc)
        finally:
            await self.context.__aexit__(*exc)


def _row(resource_type: str, resource_id: str, now: datetime, content: bytes) -> dict[str, Any]:
    return {
        "type": resource_type,
        "id": resource_id,
        "version": 1,
        "last_updated": now,
        "deleted": False,
        "content": content,
    }


def _version(
    resource_type: str, resource_id: str, version: int, now: datetime, method: str, content: bytes
) -> dict[str, Any]:
    return {
        "type": resource_type,
        "id": resource_id,
        "version": version,
        "last_updated": now,
        "method": method,
        "content": content,
    }


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*_JSON, *length, *(headers or [])]}
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./floor.db")

    import uvicorn

    # The same uvicorn settings as `backpath serve` (app/cli.py): 1 worker, no access log.
    uvicorn.run(Floor(url), host=args.host, port=args.port, workers=1, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
