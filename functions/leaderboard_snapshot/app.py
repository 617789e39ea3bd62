"""Scheduled job: the daily leaderboard_snapshot."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.leaderboards.models import SnapshotInput
from tally.leaderboards.service import snapshot
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    params = SnapshotInput.model_validate(event)
    return snapshot(params.date).model_dump(mode="json")
