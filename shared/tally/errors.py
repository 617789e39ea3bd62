"""Domain errors that carry their own HTTP problem type (RFC 9457)."""

from __future__ import annotations

from typing import Any


class TallyError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}  # response headers (Retry-After, say)
        if code is not None:
            self.code = code  # a more precise name than the class's
        self.extra = extra


class NotFound(TallyError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(TallyError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthorized(TallyError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(TallyError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class InvalidInput(TallyError):
    status = 422
    code = "invalid_input"
    title = "Invalid input"
