"""Conditional GETs for boards: ETag + Cache-Control, and 304s answered from memory.

A board's version is remembered per execution environment for a few seconds (for ever once
the board is closed), so a poll that repeats a matching ETag within that window is answered
304 without touching the database.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tally.observability import metrics
from tally.settings import get_settings


class VersionCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}

    def fresh(self, key: str, ttl_s: float) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        version, stored = entry
        if version.startswith("closed") or time.monotonic() - stored <= ttl_s:
            return version
        return None

    def put(self, key: str, version: str) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (version, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


versions = VersionCache()


def etag_for(request: Request, version: str) -> str:
    query = "&".join(sorted(request.url.query.split("&"))) if request.url.query else ""
    digest = hashlib.sha256(f"{request.url.path}?{query}#{version}".encode()).hexdigest()
    return f'W/"{digest[:20]}"'


def _matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match", "")
    return any(tag.strip() in (etag, "*") for tag in header.split(",")) if header else False


def _headers(etag: str, closed: bool) -> dict[str, str]:
    settings = get_settings()
    max_age = 86_400 if closed else settings.leaderboard_max_age_s
    return {
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}, stale-while-revalidate={max_age * 2}",
    }


def conditional_response(
    request: Request,
    cache_key: str,
    current_version: Callable[[], str],
    build: Callable[[], tuple[BaseModel, str]],
) -> Response:
    """304 when the client's ETag is current, else the body with its ETag.

    `current_version` is a cheap query used only when memory has no fresh version; `build`
    returns the body and the version it was read at.
    """
    if request.headers.get("if-none-match"):
        version = versions.fresh(cache_key, get_settings().leaderboard_freshness_s)
        if version is None:
            version = current_version()
            versions.put(cache_key, version)
        etag = etag_for(request, version)
        if _matches(request, etag):
            metrics.add_metric(name="LeaderboardCacheHit", unit="Count", value=1)
            return Response(status_code=304, headers=_headers(etag, version.startswith("closed")))
    body, version = build()
    versions.put(cache_key, version)
    metrics.add_metric(name="LeaderboardCacheMiss", unit="Count", value=1)
    etag = etag_for(request, version)
    payload: Any = body.model_dump(mode="json")
    return JSONResponse(payload, headers=_headers(etag, version.startswith("closed")))
