"""Loading an app: what the local host cannot run is refused, naming the function."""

from __future__ import annotations

from pathlib import Path

import azure.functions as func
import pytest

from aos.devhost.app import UnsupportedFunctionError, index, load_app
from aos.errors import ConfigurationError


def test_unsupported_trigger_is_refused_by_name() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="inbox/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:  # pragma: no cover - never invoked
        pass

    with pytest.raises(UnsupportedFunctionError, match=r"function 'on_blob' has a blobTrigger"):
        index(app.get_functions(), Path("."))


def test_unsupported_output_binding_is_refused_by_name() -> None:
    app = func.FunctionApp()

    @app.route(route="save")
    @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
    def save(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:  # pragma: no cover
        return func.HttpResponse("ok")

    with pytest.raises(UnsupportedFunctionError, match=r"'save' has a 'queue' binding"):
        index(app.get_functions(), Path("."))


def test_a_folder_without_function_app_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no function_app\.py"):
        load_app(tmp_path)


def test_route_prefix_from_host_json(tmp_path: Path) -> None:
    import json

    from aos.devhost.host import route_prefix
    from aos.devhost.http import compile_route, find_route, http_routes

    assert route_prefix(tmp_path) == "api"  # no host.json: the Functions default
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert route_prefix(tmp_path) == ""

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{id:int}")
    def item(req: func.HttpRequest) -> func.HttpResponse:  # pragma: no cover
        return func.HttpResponse("ok")

    routes = http_routes(list(index(app.get_functions(), tmp_path).functions.values()))
    assert find_route(routes, "GET", "/items/7", "")[1] == {"id": "7"}
    assert find_route(routes, "GET", "/api/items/7", "api")[1] == {"id": "7"}
    assert find_route(routes, "GET", "/api/items/7", "") is None
    assert find_route(routes, "GET", "/items/seven", "") is None
    assert compile_route("files/{*rest}")[0].match("/files/a/b").group("rest") == "a/b"
