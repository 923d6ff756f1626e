"""Loading a v2-model function app the way the Functions host does, and describing its functions.

`load_app(folder)` imports `function_app.py` from the folder, finds its FunctionApp/DFApp, indexes
it once with `get_functions()` and checks every trigger and binding against what the local host
can run, refusing the rest with a message that names the function and the binding.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aos.errors import ConfigurationError

SUPPORTED_TRIGGERS = {
    "httpTrigger",
    "orchestrationTrigger",
    "activityTrigger",
    "entityTrigger",
    "serviceBusTrigger",
    "timerTrigger",
}
SUPPORTED_BINDINGS = {"http", "durableClient"}


class UnsupportedFunctionError(ConfigurationError):
    code = "unsupported_function"


@dataclass
class AppFunction:
    """One indexed function: its name, trigger, bindings and the callable the host invokes."""

    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    callable: Any = field(repr=False)

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]

    def binding(self, kind: str) -> dict[str, Any] | None:
        return next((b for b in self.bindings if b["type"] == kind), None)


@dataclass
class LoadedApp:
    folder: Path
    functions: dict[str, AppFunction]
    raw: list[Any] = field(repr=False, default_factory=list)  # the SDK's Function objects

    def of_type(self, trigger_type: str) -> list[AppFunction]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]


def _function_app_object(module: Any) -> Any:
    from azure.functions import FunctionRegister

    apps = [value for value in vars(module).values() if isinstance(value, FunctionRegister)]
    if len(apps) != 1:
        raise ConfigurationError(
            f"function_app.py must define exactly one FunctionApp/DFApp at module level "
            f"(found {len(apps)})"
        )
    return apps[0]


def index(functions: list[Any], folder: Path) -> LoadedApp:
    """Describe indexed functions, refusing triggers and bindings the local host cannot run."""
    described: dict[str, AppFunction] = {}
    for function in functions:
        name = function.get_function_name()
        bindings = json.loads(function.get_function_json())["bindings"]
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        for binding in bindings:
            kind = binding["type"]
            if kind.endswith("Trigger") and kind not in SUPPORTED_TRIGGERS:
                raise UnsupportedFunctionError(
                    f"function '{name}' has a {kind}, which the local host does not run "
                    f"(it runs {', '.join(sorted(SUPPORTED_TRIGGERS))})",
                    field=name,
                )
            if not kind.endswith("Trigger") and kind not in SUPPORTED_BINDINGS:
                raise UnsupportedFunctionError(
                    f"function '{name}' has a '{kind}' binding, which the local host does not "
                    f"support (it supports {', '.join(sorted(SUPPORTED_BINDINGS))})",
                    field=name,
                )
        described[name] = AppFunction(
            name=name,
            trigger=triggers[0],
            bindings=bindings,
            callable=function.get_user_function(),
        )
    return LoadedApp(folder=folder, functions=described, raw=functions)


def load_app(folder: str | Path) -> LoadedApp:
    """Import `<folder>/function_app.py` (with the folder on sys.path, as the worker does)."""
    folder = Path(folder).resolve()
    script = folder / "function_app.py"
    if not script.is_file():
        raise ConfigurationError(f"no function_app.py in {folder}: run from the app's folder")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("function_app", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    return index(_function_app_object(module).get_functions(), folder)
