"""FastAPI dependencies shared by every route group."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

from fastapi import Depends, Request, Response, status

from tally import ratelimit
from tally.auth import Principal, Role, authorize, principal_from_authorizer, principal_from_token
from tally.errors import Forbidden, Unauthorized
from tally.settings import Settings, get_settings

ACCESS_KEY = "x-tally-access"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _principal(request: Request) -> Principal:
    settings = get_settings()
    if settings.auth_mode == "apigw":
        event = request.scope.get("aws.event") or {}
        return principal_from_authorizer(event)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("A bearer token is required")
    return principal_from_token(token.strip(), settings)


def _write_limit(principal: Principal, settings: Settings) -> int:
    """Writes per window (API_WRITE_WINDOW_SECONDS, a minute) for this caller: backends and
    admins do more than one member."""
    if principal.has(Role.SERVICE):
        return settings.api_writes_per_minute_service
    if principal.has(Role.ADMIN):
        return settings.api_writes_per_minute_admin
    return settings.api_writes_per_minute_user


@cache  # one callable per role, so FastAPI runs the check once per request
def _requirement(role: Role) -> Callable[[Request], Principal | None]:
    def check(request: Request) -> Principal | None:
        if role is Role.PUBLIC:
            return None
        principal = authorize(_principal(request), role)
        if request.method not in READ_METHODS:
            settings = get_settings()
            window = timedelta(seconds=settings.api_write_window_s)
            ratelimit.enforce(
                "api_writes", principal.subject, _write_limit(principal, settings), window
            )
        return principal

    check.__name__ = f"require_{role.value}"
    return check


def access(role: Role) -> dict[str, Any]:
    """Route keyword arguments declaring who may call it: `@router.get(path, **access(...))`."""
    extra: dict[str, Any] = {ACCESS_KEY: role.value}
    if role is not Role.PUBLIC:
        extra["security"] = [{"bearerAuth": [role.scope]}]
    return {"dependencies": [Depends(_requirement(role))], "openapi_extra": extra}


def caller(role: Role) -> Any:
    """A parameter default that hands the route its verified principal."""
    return Depends(_requirement(role))


def acting_for(principal: Principal, address: str | None) -> str:
    """The caller, or the member a service or admin names: a user token speaks only for its
    own subject."""
    if address is None or address == principal.subject:
        return principal.subject
    if principal.has(Role.SERVICE) or principal.has(Role.ADMIN):
        return address
    raise Forbidden("Only services and admins may act for another member")


def created_or_existing(response: Response, created: bool) -> None:
    """Idempotent creates answer 201 the first time and 200 when the resource was there."""
    if not created:
        response.status_code = status.HTTP_200_OK
