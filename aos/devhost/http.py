"""HTTP functions served like `func start` does: http://localhost:7071/api/<route> (or under the
`extensions.http.routePrefix` that host.json sets).

Route templates follow the Functions (ASP.NET) syntax — `{name}`, `{name?}`, `{name:int}`,
`{*rest}` — and auth levels are honoured: anonymous, function (a function key or the master
key, in the `x-functions-key` header or the `code` query parameter) and admin (master key only).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aos.devhost.app import AppFunction

DEFAULT_ROUTE_PREFIX = "api"
_PARAM = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}$")
_CONSTRAINTS = {"int": r"-?\d+", "alpha": r"[A-Za-z]+", "guid": r"[0-9a-fA-F-]{36}"}


@dataclass
class FunctionKeys:
    """The keys that open function- and admin-level routes."""

    function: str
    master: str

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> FunctionKeys:
        return cls(
            function=get("AOS_DEVHOST_FUNCTION_KEY") or secrets.token_urlsafe(24),
            master=get("AOS_DEVHOST_MASTER_KEY") or secrets.token_urlsafe(24),
        )

    def allows(self, level: str, presented: str | None) -> bool:
        level = level.upper()
        if level == "ANONYMOUS":
            return True
        if not presented:
            return False
        if secrets.compare_digest(presented, self.master):
            return True
        return level == "FUNCTION" and secrets.compare_digest(presented, self.function)


@dataclass
class HttpRoute:
    function: AppFunction
    methods: set[str]
    pattern: re.Pattern[str]
    template: str
    literal_segments: int
    auth_level: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods and method.upper() not in self.methods:
            return None
        found = self.pattern.match(path)
        if found is None:
            return None
        return {k: unquote(v) for k, v in found.groupdict().items() if v is not None}


def compile_route(template: str) -> tuple[re.Pattern[str], int]:
    """A regex for a route template, and how many literal segments it has (for precedence)."""
    parts, literals = [], 0
    for segment in template.strip("/").split("/"):
        param = _PARAM.match(segment)
        if param is None:
            parts.append("/" + re.escape(segment))
            literals += 1
            continue
        catch_all, name, constraint, optional = param.groups()
        body = ".*" if catch_all else _CONSTRAINTS.get(constraint or "", r"[^/]+")
        piece = f"/(?P<{name}>{body})"
        parts.append(f"(?:{piece})?" if optional or catch_all else piece)
    return re.compile("^" + "".join(parts) + "/?$"), literals


def http_routes(functions: list[AppFunction], default_auth: str = "FUNCTION") -> list[HttpRoute]:
    routes = []
    for function in functions:
        trigger = function.trigger
        template = trigger.get("route") or function.name
        pattern, literals = compile_route(template)
        routes.append(
            HttpRoute(
                function=function,
                methods={m.upper() for m in trigger.get("methods") or []},
                pattern=pattern,
                template=template,
                literal_segments=literals,
                auth_level=(trigger.get("authLevel") or default_auth).upper(),
            )
        )
    # ASP.NET precedence: more literal segments first, then longer templates.
    return sorted(routes, key=lambda r: (-r.literal_segments, -len(r.template)))


def find_route(
    routes: list[HttpRoute], method: str, path: str, prefix: str = DEFAULT_ROUTE_PREFIX
) -> tuple[HttpRoute, dict] | None:
    """The route serving `path` (under the route prefix, "" for none), with its parameters."""
    lead = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
    if not path.startswith(lead + "/"):
        return None
    inner = path[len(lead) :]
    for route in routes:
        params = route.match(method, inner)
        if params is not None:
            return route, params
    return None


async def invoke(function: AppFunction, arguments: dict[str, Any]) -> Any:
    """Call a function the way the Python worker does: keyword arguments named by its bindings;
    async functions are awaited, sync ones run in a worker thread."""
    if inspect.iscoroutinefunction(function.callable):
        return await function.callable(**arguments)
    return await asyncio.to_thread(function.callable, **arguments)
