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
