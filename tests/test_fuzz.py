"""Property-based fuzzing of every route group from Tally's OpenAPI schema (schemathesis):
whatever a client sends, no 5xx, every response matches its documented status and schema, and
routes that need a token refuse calls without one.

TALLY_FUZZ_EXAMPLES sets the examples per operation (default 25); the cases run are counted
and reported at the end of the session."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from tally.local import template
from tally.local.runtime import build_local_app
from tests.support import token

APP = build_local_app(template.load())
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid input and invalid input (wrong types, out-of-range values, missing fields, NUL bytes).
SCHEMA.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    allow_x00=True,
)
EXAMPLES = int(os.environ.get("TALLY_FUZZ_EXAMPLES", "25"))
CASES: Counter[str] = Counter()
# Every scope, so the fuzzer reaches past authorization into validation and the services.
FUZZER = token("0xf022000000000000000000000000000000000001", "user", "service", "admin")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]


@pytest.fixture(scope="module", autouse=True)
def generous_limits(database_url: str) -> Iterator[None]:
    """The fuzzer writes far more than a member would; the limits have their own tests."""
    from tally.settings import reset_settings

    saved = {
        k: os.environ.get(k) for k in ("API_WRITES_PER_MINUTE_ADMIN", "POU_ATTESTATIONS_PER_HOUR")
    }
    os.environ["API_WRITES_PER_MINUTE_ADMIN"] = "1000000"
    os.environ["POU_ATTESTATIONS_PER_HOUR"] = "1000000"
    reset_settings()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_holds_under_generated_input(case: Any) -> None:
    CASES[case.operation.label] += 1
    case.call_and_validate(headers={"Authorization": f"Bearer {FUZZER}"}, checks=CHECKS)


def fuzz_summary() -> str | None:
    if not CASES:
        return None
    return f"schemathesis: {sum(CASES.values())} cases over {len(CASES)} operations"
