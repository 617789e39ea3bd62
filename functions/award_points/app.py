"""Scheduled job: award points for approved verification sessions (every minute)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.observability import lambda_handler
from tally.points.models import AwardPointsInput
from tally.points.service import award_pending


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    params = AwardPointsInput.model_validate(event)
    result = award_pending(
        batch_size=params.batch_size, remaining_ms=context.get_remaining_time_in_millis
    )
    return result.model_dump()
