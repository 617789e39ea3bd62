"""API: season and week boards, around-me, user stats, exports and season admin."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from tally.api.app import create_app
from tally.leaderboards.routes import router
from tally.observability import API_CORRELATION, lambda_handler

ROUTERS = [router]
app = create_app("Tally leaderboard API", ROUTERS)
_asgi = Mangum(app, lifespan="off")


@lambda_handler(correlation_id_path=API_CORRELATION)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _asgi(event, context)
