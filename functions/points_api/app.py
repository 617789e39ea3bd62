"""API: the leaderboard, user profiles and achievements."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from tally.api.app import create_app
from tally.observability import API_CORRELATION, lambda_handler
from tally.points.routes import leaderboard_router

ROUTERS = [leaderboard_router]
app = create_app("Tally points API", ROUTERS)
_asgi = Mangum(app, lifespan="off")


@lambda_handler(correlation_id_path=API_CORRELATION)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _asgi(event, context)
