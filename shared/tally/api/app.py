"""The FastAPI app factory every API function (and `tally dev`) builds its app with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tally import __version__
from tally.db.connection import DataError
from tally.errors import TallyError
from tally.observability import API_CORRELATION, Handler, lambda_handler

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
