"""The OpenAPI document describes exactly the HTTP functions the app indexes."""

from __future__ import annotations

import json

from aos.api.openapi import ROUTES, build, document
from tests.support import app_functions


def indexed_routes() -> set[tuple[str, str]]:
    routes = set()
    for builder in app_functions().values():
        for binding in json.loads(builder.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                for method in binding["methods"]:
                    routes.add((method.lower(), "/api/" + binding["route"]))
    return routes


def test_document_and_indexed_functions_agree() -> None:
    described = {(r.method, r.path) for r in ROUTES}
    assert described == indexed_routes()


def test_every_operation_names_its_function() -> None:
    assert {r.operation_id for r in ROUTES} == {
        name
        for name, builder in app_functions().items()
        if "httpTrigger" in builder.get_function_json()
    }


def test_document_is_openapi_3_with_resolvable_refs() -> None:
    doc = json.loads(document())
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs <= set(schemas)
    register = doc["paths"]["/api/agents"]["post"]["requestBody"]
    assert register["content"]["application/json"]["schema"]["$ref"].endswith("RegisterAgent")
    assert doc["paths"]["/api/health"]["get"]["security"] == []


def test_agent_id_schema_carries_the_slug_rule() -> None:
    definition = build()["components"]["schemas"]["AgentDefinition"]
    assert "agent_id" in definition["required"]


def test_operation_ids_are_unique() -> None:
    ids = [
        operation["operationId"]
        for methods in build()["paths"].values()
        for operation in methods.values()
    ]
    assert len(ids) == len(set(ids))
