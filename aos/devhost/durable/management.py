"""The Durable Functions HTTP management API, served with aiohttp over a ``DurableEngine``.

Routes and payloads follow the extension's ``HttpApiHandler``: the same handlers answer under the
RPC base the SDK's ``DurableOrchestrationClient`` calls (``/durabletask/``, the extension's
local RPC endpoint) and under the public webhook base (``/runtime/webhooks/durabletask/``) that
``create_check_status_response`` and ``create_http_management_payload`` point at.

- ``POST orchestrators/{functionName}[/{instanceId}]`` start (202 + management payload);
- ``GET instances/{id}`` status (202 + Location while running, 200 when done, 404 unknown),
  ``DELETE instances/{id}`` purge, ``POST instances/{id}/terminate|suspend|resume|restart``,
  ``POST instances/{id}/rewind`` (refused: 501), ``POST instances/{id}/raiseEvent/{name}``;
- ``GET instances/`` list (filters, ``top``, ``x-ms-continuation-token``), ``DELETE instances/``
  purge by filter;
- ``GET entities/{name}/{key}`` entity state, ``POST entities/{name}/{key}?op=`` signal,
  ``GET entities/{name}`` list.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from . import history as h
from .engine import (
    DurableEngine,
    InstanceExists,
    InstanceGone,
    InstanceNotFound,
    InvalidArgument,
)
from .functions import FunctionNotFound
from .history import OrchestrationStatus

RPC_PREFIX = "/durabletask/"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask/"
INSTANCE_ID_PLACEHOLDER = "INSTANCEID"
DEFAULT_PAGE_SIZE = 100  # OrchestrationStatusQueryCondition.PageSize
RUNNING_STATUSES = {"Running", "Pending", "ContinuedAsNew", "Suspended"}


def _error(status: int, message: str, exc: BaseException | None = None) -> web.Response:
    """An ASP.NET ``HttpError`` body, as ``CreateErrorResponse`` writes it."""
    body: dict[str, Any] = {"Message": message}
    if exc is not None:
        body["ExceptionMessage"] = str(exc)
        body["ExceptionType"] = {
            FunctionNotFound: "System.ArgumentException",
            InvalidArgument: "System.ArgumentException",
            InstanceExists: "System.InvalidOperationException",
        }.get(type(exc), f"{type(exc).__module__}.{type(exc).__name__}")
    return web.json_response(body, status=status)


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return default


def _datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return h.parse_timestamp(value)
    except ValueError:
        return None


def _statuses(request: web.Request) -> list[str]:
    names = set(OrchestrationStatus.__members__)
    values = [v for raw in request.query.getall("runtimeStatus", []) for v in raw.split(",")]
    return [v.strip() for v in values if v.strip() in names]


class ManagementApi:
    """The HTTP API over an engine. ``await start()`` serves it on a 127.0.0.1 port."""

    def __init__(
        self,
        engine: DurableEngine,
        base_url: str | None = None,
        *,
        connection_name: str = "Storage",
        required_query: str = "",
        server_url: str | None = None,
    ) -> None:
        """``base_url``: origin of the public webhook URLs (default: this API's own address).
        ``server_url``: this API's address when its routes are ``attach``ed to another server
        instead of served by ``start()``."""
        self.engine = engine
        self._base_url = base_url.rstrip("/") if base_url else None
        self.connection_name = connection_name
        self.required_query = required_query.lstrip("?")
        self.app = web.Application()
        self.attach(self.app)
        self._runner: web.AppRunner | None = None
        self._url: str | None = server_url.rstrip("/") if server_url else None

    # -- serving ---------------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Add this API's routes to an aiohttp application (e.g. the host's HTTP server)."""
        for prefix in (RPC_PREFIX, WEBHOOK_PREFIX):
            app.router.add_route("*", prefix + "{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self._url = f"http://{host}:{bound}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ManagementApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the management API is not started")
        return self._url

    @property
    def base_url(self) -> str:
        """Origin of the public webhook URLs (the Functions host's address)."""
        return self._base_url or self.url

    @property
    def rpc_base_url(self) -> str:
        return self.url + RPC_PREFIX

    # -- the client binding ----------------------------------------------------------------------

    def _query_suffix(self) -> str:
        suffix = f"taskHub={quote(self.engine.task_hub)}&connection={quote(self.connection_name)}"
        if self.required_query:
            suffix += "&" + self.required_query
        return suffix

    def management_urls(self, instance_id: str, origin: str | None = None) -> dict[str, str]:
        base = (origin or self.base_url).rstrip("/") + WEBHOOK_PREFIX.rstrip("/")
        prefix = f"{base}/instances/{quote(instance_id, safe='')}"
        q = self._query_suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{q}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{q}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{q}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{q}",
            "purgeHistoryDeleteUri": f"{prefix}?{q}",
            "restartPostUri": f"{prefix}/restart?{q}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{q}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{q}",
        }

    def client_binding(self) -> dict[str, Any]:
        """The ``durableClient`` binding data the extension gives an out-of-process worker."""
        base = self.base_url + WEBHOOK_PREFIX.rstrip("/")
        instance_prefix = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        query = self.required_query
        return {
            "taskHubName": self.engine.task_hub,
            "connectionName": None,
            "creationUrls": {
                "createNewInstancePostUri": f"{instance_prefix}?{query}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{instance_prefix}?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{query}"
                ),
            },
            "managementUrls": self.management_urls(INSTANCE_ID_PLACEHOLDER),
            "baseUrl": base,
            "requiredQueryStringParameters": query,
            "rpcBaseUrl": self.rpc_base_url,
            "httpBaseUrl": None,
        }

    def client_binding_json(self) -> str:
        """The binding as the JSON string a ``@durable_client_input`` parameter receives."""
        return json.dumps(self.client_binding())

    def _check_status_response(self, request: web.Request, instance_id: str) -> web.Response:
        origin = f"{request.url.scheme}://{request.url.raw_authority}"
        if self._base_url:
            origin = self._base_url
        urls = self.management_urls(instance_id, origin)
        body = {
            key: urls[key]
            for key in (
                "id",
                "statusQueryGetUri",
                "sendEventPostUri",
                "terminatePostUri",
                "purgeHistoryDeleteUri",
                "restartPostUri",
                "suspendPostUri",
                "resumePostUri",
            )
        }
        return web.json_response(
            body,
            status=202,
            headers={"Location": urls["statusQueryGetUri"], "Retry-After": "10"},
        )

    # -- routing ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        parts = [p for p in tail.split("/")] if tail else []
        try:
            if parts and parts[0] == "orchestrators" and len(parts) in (2, 3):
                if request.method != "POST":
                    return _empty(404)
                return await self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0] == "entities" and len(parts) in (2, 3):
                return await self._entity(request, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0] == "instances":
                return await self._instances(request, parts[1:])
            return _empty(404)
        except (FunctionNotFound, InvalidArgument) as exc:
            return _error(400, "One or more of the arguments submitted is incorrect", exc)
        except Exception as exc:
            return _error(500, "Something went wrong while processing your request", exc)

    async def _instances(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        method = request.method
        if not parts:
            if method == "GET":
                return await self._list(request)
            if method == "DELETE":
                return await self._purge_by(request)
            return _empty(404)
        instance_id = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return await self._status(request, instance_id)
            if method == "DELETE":
                return await self._purge(instance_id)
            return _empty(404)
        if len(parts) == 3 and parts[1] == "raiseEvent" and method == "POST":
            return await self._raise_event(request, instance_id, parts[2])
        if len(parts) == 2 and method == "POST":
            operation = parts[1].lower()
            handler = {
                "terminate": self._terminate,
                "suspend": self._suspend,
                "resume": self._resume,
                "rewind": self._rewind,
                "restart": self._restart,
            }.get(operation)
            if handler is not None:
                return await handler(request, instance_id)
        return _empty(404)

    # -- orchestrations --------------------------------------------------------------------------

    async def _start(
        self, request: web.Request, function_name: str, instance_id: str | None
    ) -> web.StreamResponse:
        body = await request.text()
        input_text = None
        if body:
            try:
                input_text = json.dumps(json.loads(body))
            except ValueError as exc:
                return _error(400, "Invalid JSON content", exc)
        try:
            new_id = await self.engine.start_new_json(function_name, instance_id, input_text)
        except InstanceExists as exc:
            return _error(500, "Something went wrong while processing your request", exc)
        timeout = request.query.get("timeout")
        interval = request.query.get("pollingInterval")
        if timeout is not None and interval is not None:
            try:
                status = await self.engine.wait_for(new_id, timeout=float(timeout))
            except TimeoutError:
                return self._check_status_response(request, new_id)
            if status["runtimeStatus"] == "Completed":
                return web.json_response(status["output"], status=200)
            return web.json_response(status, status=200)
        return self._check_status_response(request, new_id)

    async def _status(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        query = request.query
        status = await self.engine.get_status(
            instance_id,
            show_history=_bool(query.get("showHistory"), False),
            show_history_output=_bool(query.get("showHistoryOutput"), False),
            show_input=_bool(query.get("showInput"), True),
        )
        if status is None:
            return _empty(404)
        runtime_status = status["runtimeStatus"]
        headers = {}
        if runtime_status in RUNNING_STATUSES:
            code = 202
            headers = {"Location": str(request.url), "Retry-After": "5"}
        elif runtime_status == "Failed":
            fail_500 = _bool(query.get("returnInternalServerErrorOnFailure"), False)
            code = 500 if fail_500 else 200
        else:
            code = 200
        return web.json_response(status, status=code, headers=headers)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        top = query.get("top")
        statuses, token = await self.engine.list_instances(
            runtime_status=_statuses(request) or None,
            created_from=_datetime(query.get("createdTimeFrom")),
            created_to=_datetime(query.get("createdTimeTo")),
            instance_id_prefix=query.get("instanceIdPrefix"),
            show_input=_bool(query.get("showInput"), True),
            top=int(top) if top and top.lstrip("-").isdigit() else DEFAULT_PAGE_SIZE,
            continuation_token=request.headers.get("x-ms-continuation-token") or None,
        )
        headers = {"x-ms-continuation-token": token} if token else {}
        return web.json_response(statuses, status=200, headers=headers)

    async def _purge(self, instance_id: str) -> web.StreamResponse:
        try:
            deleted = await self.engine.purge(instance_id)
        except InstanceNotFound:
            return _empty(404)
        return web.json_response({"instancesDeleted": deleted}, status=200)

    async def _purge_by(self, request: web.Request) -> web.StreamResponse:
        created_from = _datetime(request.query.get("createdTimeFrom"))
        if created_from is None:
            return web.json_response(
                "Please provide value for 'createdTimeFrom' parameter.", status=400
            )
        deleted = await self.engine.purge_by(
            created_from,
            _datetime(request.query.get("createdTimeTo")),
            _statuses(request) or None,
        )
        if not deleted:
            return _empty(404)
        return web.json_response({"instancesDeleted": deleted}, status=200)

    async def _raise_event(
        self, request: web.Request, instance_id: str, event_name: str
    ) -> web.StreamResponse:
        status = await self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return _empty(404)
        if status["runtimeStatus"] in ("Failed", "Canceled", "Terminated", "Completed"):
            return _empty(410)
        if request.content_type.lower() != "application/json":
            return _error(400, "Only application/json request content is supported")
        try:
            value = json.loads(await request.text())
        except ValueError as exc:
            return _error(400, "Invalid JSON content", exc)
        try:
            await self.engine.raise_event_json(instance_id, event_name, json.dumps(value))
        except InstanceNotFound:
            return _empty(404)
        except InstanceGone:
            return _empty(410)
        return _empty(202)

    async def _lifecycle(
        self, instance_id: str, operation: Any, reason: str | None
    ) -> web.Response:
        try:
            accepted = await operation(instance_id, reason)
        except InstanceNotFound:
            return _empty(404)
        return _empty(202 if accepted else 410)

    async def _terminate(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        return await self._lifecycle(
            instance_id, self.engine.terminate, request.query.get("reason")
        )

    async def _suspend(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        return await self._lifecycle(instance_id, self.engine.suspend, request.query.get("reason"))

    async def _resume(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        return await self._lifecycle(instance_id, self.engine.resume, request.query.get("reason"))

    async def _rewind(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        status = await self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return _empty(404)
        if status["runtimeStatus"] in ("Canceled", "Terminated", "Completed"):
            return _empty(410)
        return web.json_response("Rewind is not supported by the local host.", status=501)

    async def _restart(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        new_instance = _bool(request.query.get("restartWithNewInstanceId"), True)
        try:
            new_id = await self.engine.restart(instance_id, new_instance_id=new_instance)
        except InstanceNotFound as exc:
            return _error(400, "InstanceId does not match a valid orchestration instance.", exc)
        except InstanceExists as exc:
            return _error(500, "Something went wrong while processing your request", exc)
        return self._check_status_response(request, new_id)

    # -- entities --------------------------------------------------------------------------------

    async def _entity(self, request: web.Request, name: str, key: str | None) -> web.StreamResponse:
        if request.method == "GET":
            if key is None:
                return await self._list_entities(name)
            state = await self.engine.read_entity(name, "" if key == "$" else key)
            if not state.exists:
                return _empty(404)
            return web.json_response(state.state, status=200)
        if request.method not in ("POST", "DELETE") or key is None:
            return _empty(404)
        operation = "delete" if request.method == "DELETE" else request.query.get("op", "")
        body = await request.text()
        input_text = None
        if body:
            if request.content_type.lower() == "application/json":
                try:
                    input_text = json.dumps(json.loads(body))
                except ValueError as exc:
                    return _error(400, f"Could not parse JSON content: {exc}")
            else:
                input_text = json.dumps(body)
        try:
            await self.engine.signal_entity_json(name, key, operation, input_text)
        except FunctionNotFound as exc:
            return _error(400, str(exc))
        return _empty(202)

    async def _list_entities(self, name: str) -> web.StreamResponse:
        from .entities import split_entity_id

        entities = []
        for record in await self.engine.store.list_entities():
            entity_name, entity_key = split_entity_id(record.entity_id)
            if record.exists and entity_name == name.lower():
                entities.append(
                    {
                        "entityId": {"name": entity_name, "key": entity_key},
                        "lastOperationTime": h.format_status_time(record.last_modified)
                        if record.last_modified
                        else None,
                        "state": json.loads(record.state) if record.state else None,
                    }
                )
        return web.json_response(entities, status=200)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
