"""The one adapter between func.HttpRequest/HttpResponse and the admin API's handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func


async def respond(
    req: func.HttpRequest, client: Any, handler: Callable[..., Awaitable[Any]], *args: Any
) -> func.HttpResponse:
    from aos.api.http import ApiRequest, handle
    from aos.runtime import agent_store

    request = ApiRequest(
        method=req.method,
        url=req.url,
        body=req.get_body() or b"",
        params=dict(req.params),
        route_params=dict(req.route_params),
        headers={k.lower(): v for k, v in req.headers.items()},
    )
    response = await handle(request, client, agent_store, handler, *args)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
    return func.HttpResponse(
        response.encoded(),
        status_code=response.status,
        headers=headers,
        mimetype=(content_type or "application/json").split(";")[0],
    )
