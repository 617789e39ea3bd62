"""Scheduled job: freeze seasons and weeks whose end has passed."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.leaderboards.models import PeriodCloseInput
from tally.leaderboards.service import close_periods
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    PeriodCloseInput.model_validate(event)
    return close_periods().model_dump(mode="json")
