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
