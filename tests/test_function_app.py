"""The function app indexes as the host would see it, imports without Azure settings, and its
HTTP functions answer real func.HttpRequest objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest

from aos.devhost.azurite import free_ports
from tests.support import app_functions

ROOT = Path(__file__).resolve().parents[1]


def app_function(name: str):
    return app_functions()[name]


def test_imports_with_no_azure_settings_and_indexes_functions() -> None:
    script = (
        "import json, function_app;"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())"
        " for f in function_app.app.get_functions()}))"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    functions = json.loads(out.stdout)
    bindings = {b["direction"]: b for b in functions["health"]["bindings"]}
    assert bindings["IN"]["type"] == "httpTrigger"
    assert bindings["IN"]["route"] == "health"
    assert bindings["IN"]["authLevel"] == "ANONYMOUS"
    assert bindings["OUT"]["type"] == "http"


def health_request() -> func.HttpRequest:
    return func.HttpRequest(method="GET", url="http://localhost:7071/api/health", body=b"")


async def test_health_is_healthy_with_reachable_storage(
    azurite_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection)
    response = await app_function("health").get_user_function()(health_request())

    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert body["status"] == "healthy"
    assert body["checks"] == {"storage": "ok"}


async def test_health_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AOS_STORAGE_CONNECTION", raising=False)
    response = await app_function("health").get_user_function()(health_request())

    assert response.status_code == 503
    assert "AzureWebJobsStorage" in json.loads(response.get_body())["checks"]["storage"]


async def test_health_reports_unreachable_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    from aos.storage.clients import azurite_connection_string

    (closed,) = free_ports(1)
    dead = azurite_connection_string(blob_port=closed, queue_port=closed, table_port=closed)
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    response = await app_function("health").get_user_function()(health_request())

    assert response.status_code == 503
    assert json.loads(response.get_body())["checks"]["storage"].startswith(
        ("unreachable", "no answer")
    )


def bindings_of(name: str) -> list[dict]:
    return json.loads(app_function(name).get_function_json())["bindings"]


def test_durable_functions_are_indexed_with_their_triggers() -> None:
    assert bindings_of("agent") == [
        {"direction": "IN", "type": "entityTrigger", "name": "context", "entityName": "agent"}
    ]
    for orchestrator in ("agent_turn", "workflow_chain", "workflow_fanout", "workflow_decide",
                         "workflow_vote", "workflow_approval", "workflow_heartbeat"):  # fmt: skip
        (trigger,) = bindings_of(orchestrator)
        assert trigger["type"] == "orchestrationTrigger"
        assert trigger["orchestration"] == orchestrator
    for activity in ("turn_load_context", "turn_decide", "turn_act", "turn_record", "agent_decide"):
        (trigger,) = bindings_of(activity)
        assert (trigger["type"], trigger["activity"], trigger["name"]) == (
            "activityTrigger",
            activity,
            "payload",
        )


def test_service_bus_triggers_read_topics_from_settings() -> None:
    for name, topic in (
        ("on_event", "%AOS_EVENTS_TOPIC%"),
        ("on_agent_message", "%AOS_MESSAGES_TOPIC%"),
    ):
        bindings = {b["type"]: b for b in bindings_of(name)}
        trigger = bindings["serviceBusTrigger"]
        assert trigger["topicName"] == topic
        assert trigger["subscriptionName"] == "%AOS_SUBSCRIPTION%"
        assert trigger["connection"] == "ServiceBusConnection"
        assert bindings["durableClient"]["name"] == "client"


def test_admin_routes_need_a_function_key() -> None:
    for name, function in app_functions().items():
        trigger = json.loads(function.get_function_json())["bindings"]
        http = next((b for b in trigger if b["type"] == "httpTrigger"), None)
        if http is None:
            continue
        expected = "ANONYMOUS" if name in ("health", "openapi") else "FUNCTION"
        assert http["authLevel"] == expected, name
