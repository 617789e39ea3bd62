"""The FastAPI app factory every API function (and `tally dev`) builds its app with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally import __version__
from tally.db.connection import DataError
from tally.errors import TallyError
from tally.observability import API_CORRELATION, Handler, lambda_handler
from tally.settings import get_settings

logger = Logger(child=True)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://tally.dev/problems/"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response; `code` is the machine-readable error name."""
    body = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


async def _tally_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TallyError)
    response = problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(422, "invalid_input", "Invalid input", "The request is not valid", errors=errors)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, str(exc.detail), str(exc.detail))


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("The database refused a value", extra={"error": type(exc).__name__})
    return problem(422, "invalid_input", "Invalid input", "A value in the request cannot be stored")


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error in API")
    return problem(500, "internal_error", "Internal error", "Something went wrong on our side")


class BodyLimit:
    """Refuse request bodies over API_MAX_BODY_BYTES with 413 before any route reads them
    (declared by Content-Length or found while reading), so no handler holds a huge body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = get_settings().api_max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(400, "bad_content_length", "Content-Length is not a number")(
                    scope, receive, send
                )
                return
            if int(declared) > limit:
                await _too_large(limit)(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-body: nothing to answer, nothing to run
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _refuse(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return problem(status, code, detail, detail, **extra)


def _too_large(limit: int) -> JSONResponse:
    return _refuse(
        413, "payload_too_large", f"Request bodies are limited to {limit} bytes", limit=limit
    )


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem; `code` is the machine-readable error name.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}


def _openapi_with_problems(app: FastAPI) -> dict[str, Any]:
    """The schema FastAPI generates, with the bearer scheme the routes' security names and the
    problem responses every route can give (4XX, validation errors included: they are
    problems here rather than FastAPI's default shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT whose `scope` holds tally/user, tally/service or tally/admin.",
        }
    }
    problem_response = {
        "description": "A problem (RFC 9457)",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["4XX"] = problem_response
    for unused in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(unused, None)
    app.openapi_schema = schema
    return schema


def route_table(app: FastAPI) -> list[tuple[str, str, str | None]]:
    """(method, path, access) of every documented route, read from the OpenAPI schema."""
    table = []
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            table.append((method.upper(), path, operation.get("x-tally-access")))
    return sorted(table)


def create_app(title: str, routers: Sequence[APIRouter]) -> FastAPI:
    app = FastAPI(title=title, version=__version__)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(TallyError, _tally_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimit)
    app.openapi = lambda: _openapi_with_problems(app)  # type: ignore[method-assign]
    return app


def lambda_api(title: str, routers: Sequence[APIRouter]) -> tuple[FastAPI, Handler]:
    """An API function's app and its Lambda handler: Mangum (no lifespan: connections live at
    module scope) under the decorator stack every handler wears."""
    from mangum import Mangum

    app = create_app(title, routers)
    asgi = Mangum(app, lifespan="off")

    @lambda_handler(correlation_id_path=API_CORRELATION)
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        return asgi(event, context)  # type: ignore[arg-type]  # two typings of one context

    return app, handler
