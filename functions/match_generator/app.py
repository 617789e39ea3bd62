"""Scheduled job: refill the match generation queue (every minute)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.matchmaking.models import MatchJobInput
from tally.matchmaking.service import generate_matches
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    MatchJobInput.model_validate(event)
    return generate_matches().model_dump(mode="json")
