"""Scheduled job: the nightly community rollups (02:00 America/New_York), and backfills."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.community.etl import run
from tally.community.models import CommunityEtlInput
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    params = CommunityEtlInput.model_validate(event)
    return run(params, remaining_ms=context.get_remaining_time_in_millis).model_dump(mode="json")
