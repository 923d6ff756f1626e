"""GET /api/health: anonymous, so load balancers and probes can call it without a key."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    from aos.health import check_health

    report = await check_health()
    return func.HttpResponse(
        report.model_dump_json(),
        status_code=200 if report.status == "healthy" else 503,
        mimetype="application/json",
    )
