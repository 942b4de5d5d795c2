"""Where the public keys of a token issuer come from: a JWKS file, a JWKS URL, or this server's own key.

Keys are looked up by `kid`; an unknown `kid` makes the source look again (the file when it changed,
the URL at most every 30 seconds), so an issuer can rotate its keys without a restart.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = ["FileJwks", "JwksSource", "StaticJwks", "UrlJwks"]

log = logging.getLogger("backpath.auth")

_REFETCH_INTERVAL = 30.0
_URL_TTL = 900.0


class JwksSource(Protocol):
    async def keys(self, refresh: bool) -> list[dict[str, Any]]:
        """The JWKs; `refresh` asks to look again because a token named a key not among them."""
        ...


def _keys_of(document: Any) -> list[dict[str, Any]]:
    keys = document.get("keys") if isinstance(document, dict) else None
    return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


class StaticJwks:
    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self._keys = keys

    async def keys(self, refresh: bool) -> list[dict[str, Any]]:
        return self._keys


class FileJwks:
    """A JWKS JSON file, read again when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime: float | None = None
        self._keys: list[dict[str, Any]] = []
        self._load()

    def _load(self) -> None:
        mtime = self._path.stat().st_mtime
        if mtime != self._mtime:
            self._keys = _keys_of(json.loads(self._path.read_text()))
            self._mtime = mtime

    async def keys(self, refresh: bool) -> list[dict[str, Any]]:
        if refresh:
            self._load()
        return self._keys


class UrlJwks:
    """A JWKS fetched over HTTP(S), cached for 15 minutes, fetched early for an unknown kid."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self._url = url
        self._client = client
        self._keys: list[dict[str, Any]] = []
        self._fetched = -_URL_TTL

    async def keys(self, refresh: bool) -> list[dict[str, Any]]:
        age = time.monotonic() - self._fetched
        if age > _URL_TTL or (refresh and age > _REFETCH_INTERVAL):
            try:
                response = await self._client.get(self._url, timeout=5)
                response.raise_for_status()
                self._keys = _keys_of(response.json())
            except (httpx.HTTPError, ValueError) as error:
                log.warning("cannot fetch the issuer's JWKS", extra={"status": type(error).__name__})
            self._fetched = time.monotonic()
        return self._keys
