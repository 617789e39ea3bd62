"""Scheduled job: finalize proposals whose voting window has passed (every minute)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.matchmaking.models import MatchJobInput
from tally.matchmaking.service import expire_proposals
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    MatchJobInput.model_validate(event)
    return expire_proposals().model_dump(mode="json")
