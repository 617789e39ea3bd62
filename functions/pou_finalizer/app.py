"""Scheduled job: finalize pending task receipts whose k-of-m quorum is in (every minute)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.observability import lambda_handler
from tally.pou.models import PouJobInput
from tally.pou.service import run_finalizer


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    PouJobInput.model_validate(event)
    return run_finalizer(remaining_ms=context.get_remaining_time_in_millis).model_dump()
