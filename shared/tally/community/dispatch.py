"""Hand a backfill to the ETL function without waiting for it.

In AWS the admin route invokes the ETL Lambda asynchronously (the route answers within API
Gateway's 29 seconds; the backfill gets up to 15 minutes per invocation and re-invokes itself
to continue). Locally there is no Lambda: a background thread of this process runs it.
"""

from __future__ import annotations

import json
import threading
from uuid import UUID

from aws_lambda_powertools import Logger

from tally.settings import get_settings

logger = Logger(child=True)


def start_backfill(backfill_id: UUID) -> str:
    """Start (or continue) a backfill elsewhere; returns how ("lambda" or "thread")."""
    function = get_settings().community_etl_function
    payload = {"mode": "backfill", "backfill_id": str(backfill_id)}
    if function:
        import boto3

        boto3.client("lambda").invoke(
            FunctionName=function, InvocationType="Event", Payload=json.dumps(payload).encode()
        )
        logger.info("Backfill handed to the ETL function", extra={**payload, "function": function})
        return "lambda"

    def run() -> None:
        from tally.community.etl import run_backfill
        from tally.db.connection import close_connection

        try:
            run_backfill(backfill_id)
        except Exception:  # recorded on the request by run_backfill
            logger.exception("Local backfill failed", extra=payload)
        finally:
            close_connection()

    threading.Thread(target=run, name=f"backfill-{backfill_id}", daemon=True).start()
    return "thread"
