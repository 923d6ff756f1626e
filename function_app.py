"""The AOS function app: one DFApp, with the blueprints from functions/ registered on it.

Keep this import cheap (the host imports it on every cold start): blueprints import `aos` and
heavy SDKs inside their functions, not at module level.
"""

import azure.durable_functions as df
import azure.functions as func

from functions import admin, agents, events, health, workflows

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health.bp, admin.bp, agents.bp, workflows.bp, events.bp):
    app.register_functions(blueprint)
