"""The local host: runs a v2-model `function_app.py` unchanged, like `func start` does.

One aiohttp server on one port serves the app's HTTP functions under /api, the Durable HTTP
management API (what `DurableOrchestrationClient` calls) and a small local endpoint to send
messages to topics. The durable engine keeps instances, history and entity state in storage
(Azurite by default), so a restarted host resumes every instance where it stood. Service Bus
triggers receive from a real namespace when their connection is configured, else from the local
broker on storage queues; timer triggers fire on their schedules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from aos.devhost.app import AppFunction, LoadedApp, load_app
from aos.devhost.http import (
    DEFAULT_ROUTE_PREFIX,
    FunctionKeys,
    find_route,
    http_routes,
    invoke,
)
from aos.devhost.servicebus import ServiceBusPump, Subscription, resolve
from aos.errors import AOSError, ConfigurationError
from aos.settings import Settings, prepare_environment

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7071


def host_json(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "host.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def task_hub_name(app_dir: Path, get: Any) -> str:
    """host.json's durableTask hubName (with %SETTING% expressions), else the Functions default."""
    hub = host_json(app_dir).get("extensions", {}).get("durableTask", {}).get("hubName")
    return resolve(hub, get, "host.json durableTask.hubName") if hub else "TestHubName"


def route_prefix(app_dir: Path) -> str:
    """host.json's extensions.http.routePrefix ("" serves routes at the root), else "api"."""
    prefix = host_json(app_dir).get("extensions", {}).get("http", {}).get("routePrefix")
    return DEFAULT_ROUTE_PREFIX if prefix is None else prefix.strip("/")


@dataclass
class LocalHost:
    app_dir: Path
    port: int = DEFAULT_PORT
    bind: str = "127.0.0.1"
    max_delivery_count: int = 10
    lock_duration: float = 60.0
    app: LoadedApp | None = field(default=None, init=False)
    keys: FunctionKeys | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closers: list[Any] = []  # what start() opened, closed in reverse by stop()

    async def start(self) -> str:
        """Load settings and the app, open storage, and start serving. Returns the base URL."""
        from aos.devhost.azurite import port_open
        from aos.devhost.durable import DurableEngine, ManagementApi
        from aos.devhost.durable.table_store import TableDurableStore
        from aos.storage.clients import StorageClients

        if port_open(self.port, self.bind):
            raise ConfigurationError(
                f"port {self.port} is already in use on {self.bind} (is another host running?); "
                "stop it or choose another with --port"
            )

        await asyncio.to_thread(prepare_environment, self.app_dir / "local.settings.json")
        self.settings = Settings.from_env()
        self.app = load_app(self.app_dir)
        self.keys = FunctionKeys.from_settings(self.settings.get)
        self.max_delivery_count = int(
            self.settings.get("AOS_DEVHOST_MAX_DELIVERY_COUNT") or self.max_delivery_count
        )
        self.lock_duration = float(
            self.settings.get("AOS_DEVHOST_LOCK_SECONDS") or self.lock_duration
        )
        self.task_hub = task_hub_name(self.app_dir, self.settings.get)
        self.clients = StorageClients.from_settings(self.settings)
        self._closers.append(self.clients.close)
        self.engine = DurableEngine(
            self.app.raw,
            TableDurableStore(self.clients, self.settings, self.task_hub),
            self.task_hub,
        )
        self.url = f"http://{'localhost' if self.bind == '127.0.0.1' else self.bind}:{self.port}"
        self.management = ManagementApi(self.engine, base_url=self.url, server_url=self.url)
        self.routes = http_routes(self.app.of_type("httpTrigger"))
        self.route_prefix = route_prefix(self.app_dir)

        web_app = web.Application(client_max_size=100 * 1024 * 1024)
        self.management.attach(web_app)
        web_app.router.add_post("/devhost/topics/{topic}/messages", self._send_to_topic)
        lead = f"/{self.route_prefix}" if self.route_prefix else ""
        web_app.router.add_route("*", lead + "/{tail:.*}", self._serve_http)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        self._closers.append(self._runner.cleanup)
        await web.TCPSite(self._runner, self.bind, self.port).start()
        await self.engine.start()
        self._closers.append(self.engine.stop)

        self.service_bus = self._service_bus_pump()
        self._closers += [self.publisher.close, self.service_bus.close]
        if self.service_bus.subscriptions:
            self._tasks.append(asyncio.create_task(self.service_bus.run(self._stop)))
        self.timers = self._timer_pump()
        if self.timers is not None:
            self._tasks.append(asyncio.create_task(self.timers.run(self._stop)))
        return self.url

    async def stop(self) -> None:
        """Stop whatever start() got running (safe after a start that failed part-way)."""
        from aos.runtime import close

        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        from aos.inference.client import close_shared_clients

        while self._closers:
            await self._closers.pop()()
        await close()
        await close_shared_clients()
        await close_durable_client_session()

    # -- invoking functions ------------------------------------------------------------------

    def client_json(self) -> str:
        return self.management.client_binding_json()

    async def call(self, function: AppFunction, arguments: dict[str, Any]) -> Any:
        """Invoke a function with its trigger arguments plus any Durable client binding."""
        arguments = dict(arguments)
        client = function.binding("durableClient")
        if client is not None:
            arguments[client["name"]] = self.client_json()
        return await invoke(function, arguments)

    async def _serve_http(self, request: web.Request) -> web.StreamResponse:
        import azure.functions as func

        # The raw (still percent-encoded) path: route parameters are decoded once, by the match.
        path = request.raw_path.split("?", 1)[0]
        match = find_route(self.routes, request.method, path, self.route_prefix)
        if match is None:
            return web.json_response({"error": "no function serves this route"}, status=404)
        route, route_params = match
        assert self.keys is not None
        presented = request.headers.get("x-functions-key") or request.query.get("code")
        if not self.keys.allows(route.auth_level, presented):
            return web.Response(status=401)
        body = await request.read()
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=route_params,
            body=body,
        )
        trigger = route.function.trigger["name"]
        try:
            result = await self.call(route.function, {trigger: http_request})
        except Exception:
            logger.exception("function '%s' failed", route.function.name)
            return web.Response(status=500)
        return _to_aiohttp(result)

    # -- Service Bus -------------------------------------------------------------------------

    def _service_bus_pump(self) -> ServiceBusPump:
        subscriptions = [
            Subscription.of(f, self.settings.get) for f in self.app.of_type("serviceBusTrigger")
        ]
        self._broker = self._local_broker(subscriptions)
        self.publisher = self._publisher()
        return ServiceBusPump(
            subscriptions, self._receiver_for, self.call, lock_duration=self.lock_duration
        )

    def _publisher(self) -> Any:
        """Where messages sent through the host go: the namespace, or the local broker."""
        from aos.messaging.publisher import LocalBrokerPublisher, ServiceBusPublisher

        if self._has_namespace(self.settings.service_bus_connection):
            return ServiceBusPublisher.from_settings(self.settings)
        return LocalBrokerPublisher(self._broker)

    def _has_namespace(self, connection: str) -> bool:
        from aos.messaging.publisher import ServiceBusConnection

        return ServiceBusConnection.is_configured(self.settings, connection)

    def _local_broker(self, subscriptions: list[Subscription]) -> Any:
        from aos.messaging.local_broker import LocalBroker
        from aos.messaging.topics import Topics

        topology: dict[str, set[str]] = {
            topic: set(subs)
            for topic, subs in Topics.from_settings(self.settings).topology().items()
        }
        for s in subscriptions:
            if s.topic:
                topology.setdefault(s.topic, set()).add(s.subscription or "")
            elif s.queue:  # a queue is a topic with one subscription of the same name
                topology.setdefault(s.queue, set()).add(s.queue)
        return LocalBroker(
            self.clients,
            {topic: tuple(sorted(subs)) for topic, subs in topology.items()},
            prefix=self.settings.storage_prefix,
            lock_duration=self.lock_duration,
            max_delivery_count=self.max_delivery_count,
        )

    def _receiver_for(self, subscription: Subscription) -> Any:
        if self._has_namespace(subscription.connection):
            from aos.messaging.publisher import ServiceBusConnection, ServiceBusPublisher

            connection = ServiceBusConnection.from_settings(self.settings, subscription.connection)
            client = ServiceBusPublisher(connection).client()
            if subscription.topic:
                return client.get_subscription_receiver(
                    subscription.topic, subscription.subscription
                )
            return client.get_queue_receiver(subscription.queue)
        topic = subscription.topic or subscription.queue
        name = subscription.subscription or subscription.queue
        return self._broker.get_subscription_receiver(topic, name)

    async def _send_to_topic(self, request: web.Request) -> web.Response:
        """Local stand-in for sending to a Service Bus topic (admin key): the body is one
        CloudEvent or a list of them; answers 201 with the message ids."""
        from pydantic import ValidationError

        from aos.agents.models import EventEnvelope
        from aos.api.http import error_response

        assert self.keys is not None
        presented = request.headers.get("x-functions-key") or request.query.get("code")
        if not self.keys.allows("ADMIN", presented):
            return web.Response(status=401)
        topic = request.match_info["topic"]
        try:
            document = json.loads(await request.read())
            raw = document if isinstance(document, list) else [document]
            events = [EventEnvelope.model_validate(item) for item in raw]
            await self.publisher.publish(topic, events)
        except (AOSError, ValidationError) as exc:
            answer = error_response(exc)
            return web.json_response(answer.body, status=answer.status)
        except ValueError as exc:
            error = {
                "code": "invalid_input",
                "message": f"body is not JSON: {exc}",
                "field": "body",
            }
            return web.json_response({"error": error}, status=400)
        return web.json_response(
            {"topic": topic, "message_ids": [e.id for e in events]}, status=201
        )

    # -- timers --------------------------------------------------------------------------------

    def _timer_pump(self) -> Any:
        timers = self.app.of_type("timerTrigger")
        if not timers:
            return None
        from aos.devhost.timers import TimerPump

        return TimerPump(timers, self.call, get_setting=self.settings.get)

    # -- description -----------------------------------------------------------------------------

    def describe(self) -> str:
        lines = ["Functions:", ""]
        for route in sorted(self.routes, key=lambda r: r.function.name):
            methods = ",".join(sorted(route.methods)) or "ALL"
            base = f"{self.url}/{self.route_prefix}".rstrip("/")
            lines.append(f"    {route.function.name}: [{methods}] {base}/{route.template}")
        for function in sorted(self.app.functions.values(), key=lambda f: f.name):
            if function.trigger_type != "httpTrigger":
                lines.append(f"    {function.name}: {function.trigger_type}")
        assert self.keys is not None
        lines += [
            "",
            f"Task hub: {self.task_hub}; storage: {self.settings.storage_connection}",
            f"Function key: {self.keys.function}   (x-functions-key header or ?code=)",
            f"Master key:   {self.keys.master}",
        ]
        return "\n".join(lines)


async def close_durable_client_session() -> None:
    """The Durable SDK's client shares one aiohttp session per process; close it with the host."""
    from azure.durable_functions.models.utils import http_utils

    close = getattr(http_utils, "_close_session", None)
    if close is not None:
        await close()


def _to_aiohttp(result: Any) -> web.Response:
    import azure.functions as func

    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
        content_type = result.headers.get("content-type") or result.mimetype
        return web.Response(
            status=result.status_code,
            body=result.get_body(),
            headers=headers,
            content_type=content_type.split(";")[0] if content_type else None,
            charset=result.charset if content_type and content_type.startswith("text") else None,
        )
    if result is None:
        return web.Response(status=204)
    if isinstance(result, bytes | str):
        return web.Response(
            status=200, body=result if isinstance(result, bytes) else result.encode()
        )
    raise ConfigurationError(f"an HTTP function returned {type(result).__name__}, not HttpResponse")
