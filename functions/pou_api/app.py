"""API: task receipts, committees, attestations, finalization, reputation, agents and stakes."""

from tally.api.app import lambda_api
from tally.pou.routes import router

ROUTERS = [router]
app, handler = lambda_api("Tally proof-of-usefulness API", ROUTERS)
