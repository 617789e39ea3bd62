"""Scheduled job: check the points ledger against every total and board derived from it."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.observability import lambda_handler
from tally.points.reconciliation import ReconciliationInput, reconcile


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ReconciliationInput.model_validate(event)
    return reconcile().model_dump()
