"""The AOS function app: one DFApp, with the blueprints from functions/ registered on it.

Keep this import cheap (the host imports it on every cold start): blueprints import heavy SDKs
inside their functions, not at module level.
"""

import azure.durable_functions as df
import azure.functions as func

from functions.health import bp as health

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
