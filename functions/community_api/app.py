"""API: tap batches, profiles, the community endpoints and the rollup backfill."""

from tally.api.app import lambda_api
from tally.community.routes import router

ROUTERS = [router]
app, handler = lambda_api("Tally community API", ROUTERS)
