"""API: the leaderboard, user profiles and achievements."""

from tally.api.app import lambda_api
from tally.points.routes import leaderboard_router

ROUTERS = [leaderboard_router]
app, handler = lambda_api("Tally points API", ROUTERS)
