"""API: verification results from the verifier service, and the admin review of held awards."""

from tally.api.app import lambda_api
from tally.points.routes import admin_router, verification_router

ROUTERS = [verification_router, admin_router]
app, handler = lambda_api("Tally verification API", ROUTERS)
