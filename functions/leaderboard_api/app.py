"""API: season and week boards, around-me, user stats, exports and season admin."""

from tally.api.app import lambda_api
from tally.leaderboards.routes import router

ROUTERS = [router]
app, handler = lambda_api("Tally leaderboard API", ROUTERS)
