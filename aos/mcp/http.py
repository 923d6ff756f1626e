"""One MCP request over streamable HTTP, stateless, JSON responses: for an ordinary HTTP trigger.

`handle_mcp_request(server, method, headers, body)` runs the SDK's own streamable HTTP transport
(`StreamableHTTPSessionManager` in stateless, JSON-response mode) in-process for exactly one
request: it builds a synthetic ASGI scope, feeds the body in, collects what the transport sends
back and returns `(status, headers, body)`. Nothing outlives the call — no session, no stream —
so an Azure Functions HTTP trigger (or any handler that gets a whole request and returns a whole
response) can host an agent's MCP server.

Only POST carries MCP messages in this mode. GET (a standalone server-to-client SSE stream) and
DELETE (ending a session) need a long-lived connection or a session, which stateless hosting
has not got, so they are answered 405 here rather than left to hang.

The server's own lifespan is entered once per request (the SDK default lifespan is empty), since
the session manager can only be run once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from aos.mcp.server import ContextMCPServer

DEFAULT_TIMEOUT_SECONDS = 220.0  # under the 230 s that Azure's front end allows an HTTP request

HttpResponse = tuple[int, dict[str, str], bytes]


async def handle_mcp_request(
    server: ContextMCPServer | MCPServer,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str = "/mcp",
    query_string: str = "",
    security: TransportSecuritySettings | None = None,
    time_limit: float = DEFAULT_TIMEOUT_SECONDS,
) -> HttpResponse:
    """Serve one MCP HTTP request; returns (status, headers, body).

    `headers` are the request headers (any case). `security` turns on the SDK's Host/Origin
    checks (DNS-rebinding protection); by default they are off, as the Functions host fronts
    the app. A request that takes longer than `time_limit` seconds is answered 504.
    """
    method = method.upper()
    if method != "POST":
        return _json_error(
            405,
            f"{method} is not supported: this endpoint is stateless and answers only POST "
            "with JSON (no SSE stream, no sessions)",
            {"allow": "POST"},
        )
    mcp = server.mcp if isinstance(server, ContextMCPServer) else server
    manager = StreamableHTTPSessionManager(
        # The SDK's own in-process hosts (Client, InMemoryTransport) reach the low-level server
        # the same way; MCPServer has no public accessor for it.
        app=mcp._lowlevel_server,
        json_response=True,
        stateless=True,
        security_settings=security,
    )

    status = 500
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    done = anyio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the "client" stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                response_headers[key] = (
                    f"{response_headers[key]}, {text}" if key in response_headers else text
                )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    scope = _scope(method, headers, path, query_string)
    try:
        with anyio.fail_after(time_limit):
            async with manager.run():
                await manager.handle_request(scope, receive, send)
    except TimeoutError:
        return _json_error(504, f"the MCP request took longer than {time_limit:g} seconds")
    finally:
        done.set()
    return status, response_headers, b"".join(chunks)


def _scope(method: str, headers: Mapping[str, str], path: str, query_string: str) -> dict[str, Any]:
    raw_headers = [
        (name.lower().encode("latin-1"), str(value).encode("latin-1"))
        for name, value in headers.items()
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string.encode("latin-1"),
        "headers": raw_headers,
        "client": ("127.0.0.1", 0),
        "server": ("localhost", 443),
        "state": {},
    }


def _json_error(status: int, message: str, extra: dict[str, str] | None = None) -> HttpResponse:
    import json

    document = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    headers = {"content-type": "application/json", **(extra or {})}
    return status, headers, json.dumps(document).encode()
