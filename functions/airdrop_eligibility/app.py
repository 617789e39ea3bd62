"""Scheduled job: monthly airdrop eligibility for the month that just ended."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.leaderboards.models import AirdropInput
from tally.leaderboards.service import airdrop_eligibility
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    params = AirdropInput.model_validate(event)
    return airdrop_eligibility(params.period).model_dump(mode="json")
