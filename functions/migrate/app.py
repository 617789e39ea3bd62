"""Schema migrations: a CloudFormation custom resource on every deploy, or invoked directly."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tally.db.deploy import handle_event
from tally.observability import lambda_handler


@lambda_handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_event(event, context.log_stream_name)
