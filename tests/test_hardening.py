"""Hostile input: oversized bodies, write floods, forged or insufficient tokens on every route,
unbounded fields, and secrets in logs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from tally.api.app import route_table
from tally.local import template
from tally.local.runtime import build_local_app
from tally.settings import reset_settings
from tests.support import TEST_JWT_SECRET, auth, load_event, token

APP = build_local_app(template.load())
ROUTES = route_table(APP)
PROTECTED = [(m, p, a) for m, p, a in ROUTES if a != "public"]
SAMPLE_PATH_VALUES = {
    "proposal_id": "3c6f2a9e-8d41-4b7a-9f0e-5a1d2c3b4e5f",
    "task_id": "7b1e4c2a-5d3f-4e8a-9c6b-2f0a1d3e5c7b",
    "session_id": "3c6f2a9e-8d41-4b7a-9f0e-5a1d2c3b4e5f",
    "backfill_id": "3c6f2a9e-8d41-4b7a-9f0e-5a1d2c3b4e5f",
    "agent_did": "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
    "address": "0xabc0000000000000000000000000000000000001",
    "flag_id": "1",
    "season": "spring-2026",
}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES.get(m.group(1), "x1"), path)


def call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = None if method == "GET" else {}
    return client.request(method, concrete(path), json=body, headers=headers)


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch
    reset_settings()


# -- tokens ------------------------------------------------------------------------------------


def forged(**claims: Any) -> dict[str, str]:
    now = int(time.time())
    base = {
        "sub": "attacker",
        "iss": "tally-local",
        "aud": "tally",
        "iat": now,
        "exp": now + 600,
        "scope": "tally/user tally/service tally/admin",
    }
    key = claims.pop("key", TEST_JWT_SECRET)
    algorithm = claims.pop("alg", "HS256")
    return {"Authorization": f"Bearer {jwt.encode({**base, **claims}, key, algorithm=algorithm)}"}


BAD_TOKENS = {
    "none": {},
    "not a bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
    "garbage": {"Authorization": "Bearer not.a.jwt"},
    "expired": forged(exp=int(time.time()) - 10, iat=int(time.time()) - 700),
    "wrong audience": forged(aud="someone-else"),
    "wrong issuer": forged(iss="https://evil.example"),
    "wrong signature": forged(key="another-secret-" + "y" * 40),
    "alg none": {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "attacker", "scope": "tally/admin"}, None, algorithm="none")
    },
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_get_401_on_every_protected_route(case: str, client: httpx.Client) -> None:
    statuses = {
        f"{m} {p}": call(client, m, p, BAD_TOKENS[case]).status_code for m, p, _ in PROTECTED
    }
    assert set(statuses.values()) == {401}, statuses


def test_missing_scopes_get_403(client: httpx.Client) -> None:
    no_scope = auth("member")  # a valid token with no Tally scope
    user_only = auth("member", "user")
    for method, path, needs in PROTECTED:
        assert call(client, method, path, no_scope).status_code == 403, (method, path)
        if needs in ("service", "admin"):
            r = call(client, method, path, user_only)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["code"] == "forbidden"
    service_only = auth("backend", "user", "service")
    for method, path, needs in PROTECTED:
        if needs == "admin":
            assert call(client, method, path, service_only).status_code == 403, (method, path)


# -- bodies and write floods ---------------------------------------------------------------


def asgi_status(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request straight into the ASGI app (for what HTTP clients refuse to send)."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method.decode(),
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the thread's loop
    try:
        loop.run_until_complete(APP(scope, receive, send))
    finally:
        loop.close()
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_bodies_over_the_limit_are_refused_before_anything_runs(
    client: httpx.Client, db: psycopg.Connection[Any], limits: pytest.MonkeyPatch
) -> None:
    limits.setenv("API_MAX_BODY_BYTES", "2048")
    reset_settings()
    body = json.loads(load_event("community_api_post_taps.json")["body"])
    body["taps"] = body["taps"] * 40
    headers = {**auth("relay", "user", "service"), "content-type": "application/json"}
    raw = json.dumps(body).encode()
    assert len(raw) > 2048
    r = client.post("/api/community/taps", content=raw, headers=headers)
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
    # Chunked, without a Content-Length: found while reading.
    r = client.post("/api/community/taps", content=iter([raw[:1000], raw[1000:]]), headers=headers)
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
    assert asgi_status(b"POST", b"/api/community/taps", [(b"content-length", b"x")]) == 400
    assert db.execute("SELECT count(*) AS n FROM taps").fetchone() == {"n": 0}


def test_writes_are_limited_per_identity(
    client: httpx.Client, db: psycopg.Connection[Any], limits: pytest.MonkeyPatch
) -> None:
    limits.setenv("API_WRITES_PER_MINUTE_USER", "3")
    limits.setenv("API_WRITE_WINDOW_SECONDS", "3600")  # no window boundary inside the test
    reset_settings()
    me, other = (
        "0xabc0000000000000000000000000000000000001",
        "0xabc0000000000000000000000000000000000002",
    )

    def put(address: str) -> httpx.Response:
        return client.put(
            f"/api/profiles/{address}", json={"display_name": "Ada"}, headers=auth(address, "user")
        )

    assert [put(me).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = put(me)
    assert refused.json()["code"] == "RATE_LIMITED" and int(refused.headers["Retry-After"]) >= 1
    assert put(other).status_code == 200  # a budget per identity
    r = client.get(f"/api/profiles/{me}", headers=auth(me, "user"))
    assert r.status_code == 200  # reads are not counted
    row = db.execute(
        "SELECT hits FROM rate_limit_hits WHERE scope = 'api_writes' AND identity = %s", (me,)
    ).fetchone()
    assert row == {"hits": 5}


# -- bounded input -------------------------------------------------------------------------


# Free-form JSON objects whose size is bounded by the model's validator (check_json_value:
# 50 keys, 100 items, depth 5, 2000 characters a string), not by the schema.
FREE_FORM = {"attributes", "metrics", "metadata", "results"}


def _unbounded(schema: dict[str, Any], components: dict[str, Any], where: str) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _unbounded(components[name], components, f"{where}<{name}>")
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            found += _unbounded(sub, components, f"{where}|{i}")
    kind = schema.get("type")
    if kind == "string" and not (
        "maxLength" in schema
        or "enum" in schema
        or "const" in schema
        or schema.get("format") in ("uuid", "date", "date-time", "time")
    ):
        found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(where)
        found += _unbounded(schema.get("items", {}), components, f"{where}[]")
    if kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            if name in FREE_FORM:
                continue
            found += _unbounded(sub, components, f"{where}.{name}")
    return found


def test_every_request_field_is_bounded() -> None:
    spec = APP.openapi()
    components = spec["components"]["schemas"]
    unbounded: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                unbounded += _unbounded(
                    param["schema"], components, f"{method} {path} {param['name']}"
                )
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                unbounded += _unbounded(media["schema"], components, f"{method} {path} body")
    assert unbounded == []


# -- logs --------------------------------------------------------------------------------------


def test_tokens_and_secrets_never_reach_the_logs(
    db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import logging

    from tally.local.invoke import invoke

    # Everything Tally's loggers emit, whatever other tests did to their handlers and levels.
    sink = io.StringIO()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # the message and every extra
            sink.write(f"{record.getMessage()} {record.__dict__}\n")

    spy = Spy()
    # Tally's loggers are children of the service's logger, whatever its name was when they
    # were created: listen at the root and open every level for the test.
    root = logging.getLogger()
    loggers = [root] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if "tally" in name
    ]
    saved_levels = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(spy)  # also below any logger that does not propagate

    secret_token = token("0xabc0000000000000000000000000000000000001", "user", "service")
    tpl = template.load()
    for name, function in [
        ("verification_api_post_verification.json", "VerificationApiFunction"),
        ("points_api_get_me.json", "PointsApiFunction"),
        ("pou_api_post_attestation.json", "PouApiFunction"),
    ]:
        event = load_event(name)
        event["headers"]["authorization"] = f"Bearer {secret_token}"
        invoke(tpl, function, event)
    # The unexpected-error path too: a service that fails inside a request (a 500, logged with
    # its stack trace).
    from tally.points import service as points_service

    def fail(*_: Any) -> None:
        raise RuntimeError("boom")

    broken = load_event("points_api_get_me.json")
    broken["headers"]["authorization"] = f"Bearer {secret_token}"
    original = points_service.user_profile
    points_service.user_profile = fail  # type: ignore[assignment]
    try:
        failed = invoke(tpl, "PointsApiFunction", broken)
    finally:
        points_service.user_profile = original  # type: ignore[assignment]
        for lg, level in saved_levels:
            lg.removeHandler(spy)
            lg.setLevel(level)
    logged = capsys.readouterr().out + sink.getvalue()
    assert failed["statusCode"] == 500 and "boom" not in failed["body"]  # no internals either
    assert "Unhandled error in API" in logged
    assert logged.strip(), "nothing was logged: the check would prove nothing"
    for secret in (secret_token, secret_token.split(".")[2], TEST_JWT_SECRET):
        assert secret not in logged
