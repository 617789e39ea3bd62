"""Schema migrations on deploy: a CloudFormation custom resource or a direct invocation."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aws_lambda_powertools import Logger

from tally.db.connection import get_connection
from tally.db.migrate import migrate
from tally.observability import metrics

logger = Logger(child=True)

PHYSICAL_ID = "tally-schema-migrations"


def run_migrations() -> list[str]:
    applied = migrate(get_connection())
    metrics.add_metric(name="MigrationsApplied", unit="Count", value=len(applied))
    logger.info("All migrations completed successfully!", extra={"applied": applied})
    return applied


def handle_event(event: dict[str, Any], log_stream: str) -> dict[str, Any]:
    """Migrate (unless the stack is deleting the resource) and answer CloudFormation if asked."""
    request_type = event.get("RequestType")
    if request_type is None:
        return {"applied": run_migrations()}
    status, reason, data = "SUCCESS", "", {}
    try:
        if request_type in ("Create", "Update"):
            data = {"Applied": len(run_migrations())}
    except Exception as exc:
        metrics.add_metric(name="MigrationFailures", unit="Count", value=1)
        logger.exception("Migration failed")
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"[:500]
    _respond(event, status, reason, data, log_stream)
    return {"Status": status, "Reason": reason, "Data": data}


def _respond(
    event: dict[str, Any], status: str, reason: str, data: dict[str, Any], log_stream: str
) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or f"See CloudWatch log stream {log_stream}",
            "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - CloudFormation's pre-signed S3 URL
        event["ResponseURL"],
        data=body,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            logger.info("Answered CloudFormation", extra={"status": status, "http": reply.status})
    except OSError:
        # Nothing else can tell CloudFormation; it will time the resource out.
        logger.exception("Could not answer CloudFormation", extra={"status": status})
