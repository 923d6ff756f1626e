"""The AOS function app: one DFApp, with the blueprints from functions/ registered on it.

Keep this import cheap (the host imports it on every cold start): blueprints import `aos` and
heavy SDKs inside their functions, not at module level.
"""

import azure.durable_functions as df
import azure.functions as func

from aos.governance.auth import host_auth_level
from aos.governance.secrets import resolve_process_secrets
from functions import admin, agents, events, health, workflows

# Key Vault references the platform did not resolve (local and self-hosted runs), once, before
# any function runs: the SDKs load only if there is something to read.
resolve_process_secrets()

# Function keys at the host (the default), or anonymous at the host when AOS checks Entra ID
# tokens itself (AOS_ADMIN_AUTH=entra); either way AOS checks the caller's role per route.
app = df.DFApp(http_auth_level=func.AuthLevel[host_auth_level()])
for blueprint in (health.bp, admin.bp, agents.bp, workflows.bp, events.bp):
    app.register_functions(blueprint)
