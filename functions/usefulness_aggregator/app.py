"""Scheduled job: per-agent usefulness scores and the hourly reward pool (every hour)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.observability import lambda_handler
from tally.pou.models import PouJobInput
from tally.pou.service import aggregate_usefulness


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    PouJobInput.model_validate(event)
    return aggregate_usefulness().model_dump(mode="json")
