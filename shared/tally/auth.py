"""Who may call what: bearer JWTs with Tally scopes, checked by one FastAPI dependency.

In AWS the HTTP API's JWT authorizer verifies the token before the Lambda runs, and the app
reads the verified claims from the event. Locally a dev key signs and checks HS256 tokens.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import jwt
from pydantic import BaseModel

from tally.errors import Forbidden, Unauthorized
from tally.settings import Settings, get_settings


class Role(StrEnum):
    PUBLIC = "public"
    USER = "user"
    SERVICE = "service"
    ADMIN = "admin"

    @property
    def scope(self) -> str:
        return f"tally/{self.value}"


class Principal(BaseModel):
    subject: str
    scopes: frozenset[str]

    def has(self, role: Role) -> bool:
        return role.scope in self.scopes


def issue_token(
    subject: str,
    roles: list[Role],
    *,
    ttl_s: int = 3600,
    settings: Settings | None = None,
    now: float | None = None,
) -> str:
    """A locally signed token (dev key); in AWS tokens come from the identity provider."""
    settings = settings or get_settings()
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise RuntimeError("TALLY_JWT_SECRET is not set; local tokens cannot be signed")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "scope": " ".join(r.scope for r in roles),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def principal_from_token(token: str, settings: Settings | None = None) -> Principal:
    settings = settings or get_settings()
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise Unauthorized("Token verification is not configured")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"The token is not valid: {type(exc).__name__}") from exc
    return _principal(claims)


def principal_from_authorizer(event: dict[str, Any]) -> Principal:
    """Claims the API Gateway JWT authorizer already verified."""
    claims = event.get("requestContext", {}).get("authorizer", {}).get("jwt", {}).get("claims")
    if not claims or "sub" not in claims:
        raise Unauthorized("The request carries no verified token")
    return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    subject = str(claims["sub"])
    if not subject or "\x00" in subject or len(subject) > 256:
        raise Unauthorized("The token's subject is not usable")
    raw = claims.get("scope") or claims.get("scp") or ""
    if isinstance(raw, list):
        scopes = frozenset(str(s) for s in raw)
    else:
        scopes = frozenset(str(raw).strip("[]").replace(",", " ").split())
    return Principal(subject=subject, scopes=scopes)


def authorize(principal: Principal, role: Role) -> Principal:
    if not principal.has(role):
        raise Forbidden(f"This route needs the {role.scope} scope")
    return principal
