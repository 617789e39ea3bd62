"""API: the voter's next match, votes, conversations, proposal blocks and system health."""

from tally.api.app import lambda_api
from tally.matchmaking.routes import router

ROUTERS = [router]
app, handler = lambda_api("Tally matchmaking API", ROUTERS)
