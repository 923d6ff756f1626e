"""Static checks of the ARM template in `infrastructure/` (no Azure, no network).

The template is read as JSON and its ARM expressions (strings in square brackets) are parsed just
far enough to follow `parameters()`, `variables()`, `resourceId()` and `reference()` calls. Most
checks are functions that return a list of problems, so the last test can prove that each of
them really reports a deliberately broken copy of the template.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).resolve().parent.parent / "infrastructure"
TEMPLATE_PATH = INFRA / "azuredeploy.json"
PARAMETERS_PATH = INFRA / "parameters.json"

TEMPLATE_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMETERS_SCHEMA = (
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
)

SITE = "Microsoft.Web/sites"
STORAGE = "Microsoft.Storage/storageAccounts"
SERVICE_BUS = "Microsoft.ServiceBus/namespaces"
TOPIC = "Microsoft.ServiceBus/namespaces/topics"
SUBSCRIPTION = "Microsoft.ServiceBus/namespaces/topics/subscriptions"
KEY_VAULT = "Microsoft.KeyVault/vaults"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
ROLE_DEFINITION = "Microsoft.Authorization/roleDefinitions"

# Built-in role definition ids (learn.microsoft.com, "Azure built-in roles"), and where each
# one is granted to the function app's identity.
EXPECTED_ROLES = {
    ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", STORAGE),  # Storage Blob Data Owner
    ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", STORAGE),  # Storage Queue Data Contributor
    ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", STORAGE),  # Storage Table Data Contributor
    ("17d1049b-9a84-46fb-8f53-869881c3d3ab", STORAGE),  # Storage Account Contributor
    ("090c5cfd-751d-490a-894a-3ce6f1109419", SERVICE_BUS),  # Azure Service Bus Data Owner
    ("4633458b-17de-408a-b874-0445c86b69e6", KEY_VAULT),  # Key Vault Secrets User
}

# App settings whose value is fixed (after resolving plain variables).
FIXED_SETTINGS = {
    "AzureWebJobsStorage__credential": "managedidentity",
    "AOS_STORAGE_CONNECTION": "AzureWebJobsStorage",
    "AOS_STORAGE_PREFIX": "aos",
    "AOS_TASK_HUB": "aoshub",
    "AOS_EVENTS_TOPIC": "aos-events",
    "AOS_MESSAGES_TOPIC": "aos-agent-messages",
    "AOS_SUBSCRIPTION": "aos",
}
COMPUTED_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "ServiceBusConnection__fullyQualifiedNamespace",
    "AOS_KEY_VAULT_URL",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
# Settings that can only hold a key-bearing connection string.
FORBIDDEN_SETTINGS = {
    "AzureWebJobsStorage",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "ServiceBusConnection",
}
# App settings that Flex Consumption deprecates or rejects ("Flex Consumption plan deprecations" in
# the Functions app settings reference; ARM answers FUNCTIONS_WORKER_RUNTIME with a BadRequest).
# The runtime, the scale limit and the deployment package live in `functionAppConfig` instead.
FLEX_FORBIDDEN_SETTINGS = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_MOUNT_ENABLED",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_USE_PLACEHOLDER_DOTNETISOLATED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE",
    "TZ",
}
# siteConfig properties that Flex Consumption sites reject (ARM error 51021) or that moved into
# `functionAppConfig`; compared case-insensitively.
FLEX_FORBIDDEN_SITE_CONFIG = {
    "linuxfxversion",
    "windowsfxversion",
    "netframeworkversion",
    "javaversion",
    "powershellversion",
    "ftpsstate",
    "use32bitworkerprocess",
    "alwayson",
    "functionappscalelimit",
    "prewarmedinstancecount",
    "functionsruntimescalemonitoringenabled",
}
# Site properties the Flex samples leave out (the plan, not the site, says "Linux").
FLEX_FORBIDDEN_SITE_PROPERTIES = {"reserved", "isreserved", "isxenon", "containersize"}
FLEX_RUNTIME = {"name": "python", "version": "3.11"}
FLEX_INSTANCE_MEMORY_MB = {512, 2048, 4096}
FLEX_MAX_INSTANCES = (40, 1000)  # lowest and highest maximumInstanceCount Flex accepts
PLAN = "Microsoft.Web/serverfarms"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"

# Text that means a secret is being put somewhere.
SECRET_MARKERS = (
    "accountkey=",
    "sharedaccesskey",
    "sharedaccesssignature",
    "sig=",
    "listkeys(",
    "listaccountsas(",
    "listservicesas(",
    "listconnectionstrings(",
    "listsecrets(",
)

EXPECTED_OUTPUTS = {
    "functionAppName",
    "functionAppHostName",
    "storageAccountName",
    "serviceBusNamespace",
    "keyVaultUri",
}


# --------------------------------------------------------------------------------------------
# A small reader of ARM expressions.
# --------------------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[str, ...]


def load_template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))


def is_expression(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("[")
        and value.endswith("]")
        and not value.startswith("[[")
    )


def walk_strings(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """Every string value in a JSON tree, with a JSONPath-like location."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{index}]")


def expressions(node: Any) -> list[tuple[str, str]]:
    """(location, body) of every ARM expression in a JSON tree; body has no brackets."""
    return [(path, text[1:-1]) for path, text in walk_strings(node) if is_expression(text)]


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """Yield (index, char, depth) for characters outside string literals; checks balance."""
    depth = 0
    in_string = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "'":
                if text[index + 1 : index + 2] == "'":  # '' is an escaped quote
                    index += 2
                    continue
                in_string = False
            index += 1
            continue
        if char == "'":
            in_string = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {text!r}")
        yield index, char, depth
        index += 1
    if in_string or depth:
        raise ValueError(f"unterminated string or bracket in {text!r}")


def split_args(text: str) -> tuple[str, ...]:
    """Split a call's argument text on its top-level commas."""
    if not text.strip():
        return ()
    args, start = [], 0
    for index, char, depth in _scan(text):
        if char == "," and depth == 0:
            args.append(text[start:index].strip())
            start = index + 1
    args.append(text[start:].strip())
    return tuple(args)


def _closing_paren(text: str, open_index: int) -> int:
    for index, char, depth in _scan(text[open_index:]):
        if char in ")]" and depth == 0:
            return open_index + index
    raise ValueError(f"no closing parenthesis in {text!r}")


def calls(body: str) -> list[Call]:
    """Every function call in an expression body, nested ones included."""
    found = []
    outside = {index for index, _, _ in _scan(body)}  # positions not inside string literals
    index = 0
    while index < len(body):
        match = _IDENT.match(body, index) if index in outside else None
        if match is None:
            index += 1
            continue
        preceded = index > 0 and (body[index - 1].isalnum() or body[index - 1] in "_.")
        after = match.end()
        while after < len(body) and body[after] == " ":
            after += 1
        if not preceded and after < len(body) and body[after] == "(":
            close = _closing_paren(body, after)
            found.append(Call(match.group(), split_args(body[after + 1 : close])))
        index = match.end()
    return found


def single_call(body: str) -> Call | None:
    """The call if the whole body is one call (`f(...)`), else None."""
    body = body.strip()
    match = _IDENT.match(body)
    if not match or body[match.end() : match.end() + 1] != "(":
        return None
    if _closing_paren(body, match.end()) != len(body) - 1:
        return None
    return Call(match.group(), split_args(body[match.end() + 1 : -1]))


def literal(arg: str) -> str | None:
    """The value of a quoted string literal argument, or None if it is not one."""
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == arg[-1] == "'":
        return arg[1:-1].replace("''", "'")
    return None


def norm(arg: str) -> str:
    return re.sub(r"\s+", "", arg)


def resolve(value: str, template: dict[str, Any]) -> str:
    """Follow `[variables('x')]` and `'literal'` to a plain string where possible."""
    for _ in range(10):
        if not is_expression(value):
            return value
        call = single_call(value[1:-1])
        if call and call.name == "variables" and len(call.args) == 1:
            value = template.get("variables", {}).get(literal(call.args[0]), value)
            if not isinstance(value, str):
                return str(value)
            continue
        text = literal(value[1:-1])
        return value if text is None else text
    return value


def resolve_arg(arg: str, template: dict[str, Any]) -> str:
    text = literal(arg)
    return text if text is not None else resolve(f"[{arg}]", template)


# Resources are identified by (type, name segments); a segment is a normalized expression
# argument, with literals written as quoted strings, so a resource's `name` and the arguments
# of a `resourceId()` that points at it compare equal.
Key = tuple[str, tuple[str, ...]]


def name_segments(name: str) -> tuple[str, ...]:
    if not is_expression(name):
        return tuple(f"'{part}'" for part in name.split("/"))
    body = name[1:-1]
    call = single_call(body)
    if call and call.name == "format" and call.args and literal(call.args[0]) is not None:
        segments = []
        for part in literal(call.args[0]).split("/"):
            placeholder = re.fullmatch(r"\{(\d+)\}", part)
            if placeholder:
                segments.append(norm(call.args[1 + int(placeholder.group(1))]))
            else:
                segments.append(f"'{part}'")
        return tuple(segments)
    return (norm(body),)


def resource_key(resource: dict[str, Any]) -> Key:
    return resource["type"].lower(), name_segments(resource["name"])


def resource_id_key(call: Call) -> Key:
    """The key a `resourceId(...)` call points at (leading subscription/group args skipped)."""
    for position, arg in enumerate(call.args):
        text = literal(arg)
        if text is not None and "/" in text:
            return text.lower(), tuple(norm(a) for a in call.args[position + 1 :])
    raise ValueError(f"resourceId() without a resource type: {call}")


def resources(template: dict[str, Any], type_: str | None = None) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if type_ is None or r["type"].lower() == type_.lower()]


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    found = resources(template, type_)
    assert len(found) == 1, f"expected exactly one {type_}, found {len(found)}"
    return found[0]


def app_settings(template: dict[str, Any]) -> dict[str, str]:
    site = only(template, SITE)
    pairs = site["properties"]["siteConfig"]["appSettings"]
    return {pair["name"]: pair["value"] for pair in pairs}


def refers_to(value: str, type_: str, resource: dict[str, Any]) -> bool:
    """True if `value` holds a resourceId() call that points at `resource`."""
    if not is_expression(value):
        return False
    target = resource_key(resource)
    return any(
        resource_id_key(call) == target and type_.lower() == target[0]
        for call in calls(value[1:-1])
        if call.name == "resourceId"
    )


# --------------------------------------------------------------------------------------------
# Checks. Each returns a list of problems (empty means fine).
# --------------------------------------------------------------------------------------------


def check_declared_and_used(template: dict[str, Any], kind: str) -> list[str]:
    """Each `<kind>('x')` reference is declared, and each one declared is used."""
    declared = set(template.get(kind, {}))
    used = set()
    problems = []
    for path, body in expressions(template):
        for call in calls(body):
            if call.name == kind:
                name = literal(call.args[0]) if call.args else None
                used.add(name)
                if name not in declared:
                    problems.append(f"{path}: {kind}({name!r}) is not declared")
    singular = kind.removesuffix("s")
    problems += [f"{singular} {name!r} is declared but never used" for name in declared - used]
    return problems


def check_parameters(template: dict[str, Any]) -> list[str]:
    return check_declared_and_used(template, "parameters")


def check_variables(template: dict[str, Any]) -> list[str]:
    return check_declared_and_used(template, "variables")


def check_app_settings(template: dict[str, Any]) -> list[str]:
    site = only(template, SITE)
    pairs = site["properties"]["siteConfig"]["appSettings"]
    names = [pair["name"] for pair in pairs]
    settings = app_settings(template)
    problems = [f"app setting {name} appears twice" for name in set(names) if names.count(name) > 1]
    for name in sorted((set(FIXED_SETTINGS) | COMPUTED_SETTINGS) - set(settings)):
        problems.append(f"app setting {name} is missing")
    for name, expected in FIXED_SETTINGS.items():
        if name in settings and resolve(settings[name], template) != expected:
            problems.append(f"app setting {name} is {settings[name]!r}, expected {expected!r}")
    for name in sorted(FORBIDDEN_SETTINGS & set(settings)):
        problems.append(f"app setting {name} needs a key; use identity-based settings instead")
    upper = {name.upper() for name in settings}
    for name in sorted(FLEX_FORBIDDEN_SETTINGS & upper):
        problems.append(f"app setting {name} is not allowed on Flex Consumption")

    storage = only(template, STORAGE)
    bus = only(template, SERVICE_BUS)
    vault = only(template, KEY_VAULT)
    insights = only(template, "Microsoft.Insights/components")
    account = settings.get("AzureWebJobsStorage__accountName", "")
    if norm(account) != norm(storage["name"]):
        problems.append("AzureWebJobsStorage__accountName is not the storage account's name")
    namespace = settings.get("ServiceBusConnection__fullyQualifiedNamespace", "")
    call = single_call(namespace[1:-1]) if is_expression(namespace) else None
    if not (
        call
        and call.name == "format"
        and literal(call.args[0]) == "{0}.servicebus.windows.net"
        and norm(call.args[1]) == norm(bus["name"][1:-1])
    ):
        problems.append("ServiceBusConnection__fullyQualifiedNamespace is not <namespace FQDN>")
    vault_url = settings.get("AOS_KEY_VAULT_URL", "")
    if not (refers_to(vault_url, KEY_VAULT, vault) and vault_url.endswith(".vaultUri]")):
        problems.append("AOS_KEY_VAULT_URL is not the vault's vaultUri")
    insights_cs = settings.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "")
    if not (
        refers_to(insights_cs, "Microsoft.Insights/components", insights)
        and insights_cs.endswith(".ConnectionString]")
    ):
        problems.append("APPLICATIONINSIGHTS_CONNECTION_STRING is not from Application Insights")
    return problems


def check_no_keys(template: dict[str, Any]) -> list[str]:
    """No key, SAS or connection string anywhere: not in app settings, not in outputs."""
    problems = []
    for path, text in walk_strings(template):
        lowered = text.lower()
        for marker in SECRET_MARKERS:
            if marker in lowered:
                problems.append(f"{path} holds {marker!r}: {text[:80]}")
    return problems


def check_storage(template: dict[str, Any]) -> list[str]:
    account = only(template, STORAGE)
    props = account.get("properties", {})
    expected = {
        "allowSharedKeyAccess": False,
        "allowBlobPublicAccess": False,
        "supportsHttpsTrafficOnly": True,
        "minimumTlsVersion": "TLS1_2",
    }
    problems = [
        f"storage account {key} is {props.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if props.get(key) != value
    ]
    if account.get("kind") != "StorageV2" or account.get("sku", {}).get("name") != "Standard_LRS":
        problems.append("storage account is not a Standard_LRS StorageV2 account")
    return problems


def check_flex_plan(template: dict[str, Any]) -> list[str]:
    plan = only(template, PLAN)
    problems = []
    if plan.get("sku") != {"name": "FC1", "tier": "FlexConsumption"}:
        problems.append(f"plan sku is {plan.get('sku')!r}, expected FC1 / FlexConsumption")
    if plan.get("kind") != "functionapp":
        problems.append(f"plan kind is {plan.get('kind')!r}, expected 'functionapp'")
    if plan.get("properties", {}).get("reserved") is not True:
        problems.append("plan is not reserved (Linux)")
    site = only(template, SITE)
    if not refers_to(site["properties"].get("serverFarmId", ""), PLAN, plan):
        problems.append("the function app is not on the template's plan")
    return problems


def check_flex_site(template: dict[str, Any]) -> list[str]:
    """The site carries functionAppConfig and none of the settings Flex refuses."""
    site = only(template, SITE)
    props = site.get("properties", {})
    problems = []
    if site.get("kind") != "functionapp,linux":
        problems.append(f"site kind is {site.get('kind')!r}, expected 'functionapp,linux'")
    if "SystemAssigned" not in site.get("identity", {}).get("type", ""):
        problems.append("the site has no system-assigned identity")
    for key in sorted(k for k in props if k.lower() in FLEX_FORBIDDEN_SITE_PROPERTIES):
        problems.append(f"site property {key} is not used on Flex Consumption")
    config = props.get("siteConfig", {})
    for key in sorted(k for k in config if k.lower() in FLEX_FORBIDDEN_SITE_CONFIG):
        problems.append(f"siteConfig.{key} is rejected on Flex Consumption")

    app_config = props.get("functionAppConfig")
    if not isinstance(app_config, dict):
        return [*problems, "the site has no functionAppConfig"]
    runtime = app_config.get("runtime")
    if runtime != FLEX_RUNTIME:  # the version is a string: "3.11", not 3.11
        problems.append(f"functionAppConfig.runtime is {runtime!r}, expected {FLEX_RUNTIME!r}")
    scale = app_config.get("scaleAndConcurrency", {})
    low, high = FLEX_MAX_INSTANCES
    count = scale.get("maximumInstanceCount")
    if not (isinstance(count, int) and low <= count <= high):
        problems.append(f"maximumInstanceCount {count!r} is not in [{low}, {high}]")
    if scale.get("instanceMemoryMB") not in FLEX_INSTANCE_MEMORY_MB:
        problems.append(f"instanceMemoryMB {scale.get('instanceMemoryMB')!r} is not offered")
    problems += _check_deployment_storage(template, site, app_config.get("deployment", {}))
    return problems


def _check_deployment_storage(
    template: dict[str, Any], site: dict[str, Any], deployment: dict[str, Any]
) -> list[str]:
    """deployment.storage = <the storage account's blob endpoint> + <a declared private container>,
    reached with the site's system-assigned identity."""
    storage = deployment.get("storage", {})
    problems = []
    if storage.get("type") != "blobContainer":
        problems.append(f"deployment storage type is {storage.get('type')!r}, not blobContainer")
    if storage.get("authentication") != {"type": "SystemAssignedIdentity"}:
        problems.append(
            f"deployment storage authentication is {storage.get('authentication')!r}, "
            "expected SystemAssignedIdentity (no connection string)"
        )
    value = storage.get("value", "")
    call = single_call(value[1:-1]) if is_expression(value) else None
    if not (call and call.name == "concat" and len(call.args) == 2):
        return [*problems, f"deployment storage value {value!r} is not concat(endpoint, container)"]
    endpoint, container_arg = call.args
    account = only(template, STORAGE)
    refs = [c for c in calls(endpoint) if c.name == "reference"]
    target = single_call(refs[0].args[0]) if refs and refs[0].args else None
    if not (
        endpoint.startswith("reference(")
        and target
        and target.name == "resourceId"
        and resource_id_key(target) == resource_key(account)
        and endpoint.endswith(".primaryEndpoints.blob")
    ):
        problems.append("deployment storage value does not start with the account's blob endpoint")

    account_segment = name_segments(account["name"])[0]
    containers = [
        c
        for c in resources(template, CONTAINER)
        if name_segments(c["name"]) == (account_segment, "'default'", norm(container_arg))
    ]
    if len(containers) != 1:
        problems.append(f"deployment container {container_arg!r} is not declared in the template")
        return problems
    container = containers[0]
    if container.get("properties", {}).get("publicAccess") != "None":
        problems.append("the deployment container is not private")
    name = resolve_arg(container_arg, template)
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", name):
        problems.append(f"deployment container name {name!r} is not a valid container name")
    depends = {
        resource_id_key(c)
        for entry in site.get("dependsOn", [])
        if is_expression(entry)
        for c in [single_call(entry[1:-1])]
        if c and c.name == "resourceId"
    }
    if resource_key(container) not in depends:
        problems.append("the site does not depend on its deployment container")
    return problems


def _scope_key(scope: str) -> Key | None:
    """The key of a `format('Provider/type/{0}', name)` scope."""
    call = single_call(scope[1:-1]) if is_expression(scope) else None
    if not (call and call.name == "format" and literal(call.args[0]) is not None):
        return None
    parts = literal(call.args[0]).split("/")
    types, segments = parts[:2], []
    for position, part in enumerate(parts[2:]):
        if position % 2:
            types.append(part)
        else:
            placeholder = re.fullmatch(r"\{(\d+)\}", part)
            if not placeholder:
                return None
            segments.append(norm(call.args[1 + int(placeholder.group(1))]))
    return "/".join(types).lower(), tuple(segments)


def check_role_assignments(template: dict[str, Any]) -> list[str]:
    site = only(template, SITE)
    site_key = resource_key(site)
    index = {resource_key(r): r for r in template["resources"]}
    problems, granted, names = [], set(), []
    for assignment in resources(template, ROLE_ASSIGNMENT):
        props = assignment.get("properties", {})
        label = props.get("roleDefinitionId", "?")

        principal = props.get("principalId", "")
        ref = None
        if is_expression(principal):
            ref = next((c for c in calls(principal[1:-1]) if c.name == "reference"), None)
        target = None
        if ref and ref.args:
            target_call = single_call(ref.args[0])
            if target_call and target_call.name == "resourceId":
                target = resource_id_key(target_call)
        if not (
            target == site_key
            and ref
            and len(ref.args) == 3
            and literal(ref.args[2]) == "full"
            and principal.endswith(".identity.principalId]")
        ):
            problems.append(f"{label}: principalId is not the function app's identity")
        if props.get("principalType") != "ServicePrincipal":
            problems.append(f"{label}: principalType is not ServicePrincipal")

        role = resolve(props.get("roleDefinitionId", ""), template)
        role_call = single_call(role[1:-1]) if is_expression(role) else None
        role_guid = None
        if (
            role_call
            and role_call.name == "subscriptionResourceId"
            and len(role_call.args) == 2
            and literal(role_call.args[0]) == ROLE_DEFINITION
        ):
            role_guid = literal(role_call.args[1])
        if role_guid is None:
            problems.append(f"{label}: roleDefinitionId is not a built-in role definition id")

        scope = _scope_key(assignment.get("scope", ""))
        if scope not in index:
            problems.append(f"{label}: scope {assignment.get('scope')!r} is not in the template")
            continue
        granted.add((role_guid, index[scope]["type"]))

        name = assignment.get("name", "")
        name_call = single_call(name[1:-1]) if is_expression(name) else None
        keys = set()
        for arg in name_call.args if name_call and name_call.name == "guid" else ():
            inner = single_call(arg)
            if inner and inner.name == "resourceId":
                keys.add(resource_id_key(inner))
        if not {scope, site_key} <= keys or norm(props.get("roleDefinitionId", "")) not in {
            norm(f"[{arg}]") for arg in (name_call.args if name_call else ())
        }:
            problems.append(f"{label}: name is not guid(scope id, app id, role)")
        names.append(norm(name))
    if len(names) != len(set(names)):
        problems.append("two role assignments share a name")
    for missing in sorted(EXPECTED_ROLES - granted, key=str):
        problems.append(f"role {missing[0]} on {missing[1]} is not granted")
    for extra in sorted(granted - EXPECTED_ROLES, key=str):
        problems.append(f"unexpected role assignment {extra}")
    return problems


def check_depends_on(template: dict[str, Any]) -> list[str]:
    index = {resource_key(r) for r in template["resources"]}
    problems = []
    for resource in template["resources"]:
        own = resource_key(resource)
        for entry in resource.get("dependsOn", []):
            call = single_call(entry[1:-1]) if is_expression(entry) else None
            if not (call and call.name == "resourceId"):
                problems.append(f"{resource['type']}: dependsOn {entry!r} is not a resourceId()")
                continue
            key = resource_id_key(call)
            if key == own:
                problems.append(f"{resource['type']} depends on itself")
            elif key not in index:
                problems.append(f"{resource['type']}: dependsOn {entry!r} is not in the template")
    return problems


def check_resource_ids(template: dict[str, Any]) -> list[str]:
    """Every resourceId() anywhere in the template points at a resource declared in it."""
    index = {resource_key(r) for r in template["resources"]}
    return [
        f"{path}: {call.name}{call.args} is not declared in the template"
        for path, body in expressions(template)
        for call in calls(body)
        if call.name == "resourceId" and resource_id_key(call) not in index
    ]


def check_reference_dependencies(template: dict[str, Any]) -> list[str]:
    """reference(resourceId(...)) of a template resource needs an explicit dependsOn."""
    index = {resource_key(r) for r in template["resources"]}
    problems = []
    for resource in template["resources"]:
        depends = set()
        for entry in resource.get("dependsOn", []):
            call = single_call(entry[1:-1]) if is_expression(entry) else None
            if call and call.name == "resourceId":
                depends.add(resource_id_key(call))
        for path, body in expressions(resource):
            for call in calls(body):
                target = single_call(call.args[0]) if call.name == "reference" else None
                if target and target.name == "resourceId":
                    key = resource_id_key(target)
                    if key in index and key not in depends:
                        problems.append(
                            f"{resource['type']}{path[1:]}: reference to {key} "
                            "has no matching dependsOn"
                        )
    return problems


# --------------------------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_template_is_an_arm_deployment_template(template):
    assert template["$schema"] == TEMPLATE_SCHEMA
    assert template["contentVersion"] == "1.0.0.0"
    assert set(template) <= {
        "$schema",
        "contentVersion",
        "metadata",
        "parameters",
        "variables",
        "functions",
        "resources",
        "outputs",
    }
    assert isinstance(template["resources"], list) and template["resources"]
    for resource in template["resources"]:
        assert {"type", "apiVersion", "name"} <= set(resource), resource
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", resource["apiVersion"])


def test_every_expression_is_well_formed(template):
    found = expressions(template)
    assert len(found) > 50  # the walker really sees the template's expressions
    for path, body in found:
        try:
            list(_scan(body))
            calls(body)
        except ValueError as exc:
            pytest.fail(f"{path}: {exc}")


def test_parameters_are_declared_and_used(template):
    assert check_parameters(template) == []


def test_variables_are_declared_and_used(template):
    assert check_variables(template) == []


def test_name_prefix_parameter(template):
    prefix = template["parameters"]["namePrefix"]
    assert prefix["type"] == "string"
    assert prefix["defaultValue"] == "aos"
    assert (prefix["minLength"], prefix["maxLength"]) == (3, 11)
    variables = template["variables"]
    assert variables["prefix"] == "[toLower(parameters('namePrefix'))]"
    assert variables["uniqueSuffix"] == "[uniqueString(resourceGroup().id)]"
    for resource in template["resources"]:
        if resource["type"] == ROLE_ASSIGNMENT:
            continue
        # Each name leads, through variables, to both the prefix and the unique suffix.
        first = name_segments(resource["name"])[0]
        text = resolve(f"[{first}]", template)
        assert "variables('prefix')" in text and "variables('uniqueSuffix')" in text, resource


def test_parameters_file(template):
    parameters = json.loads(PARAMETERS_PATH.read_text(encoding="utf-8"))
    assert parameters["$schema"] == PARAMETERS_SCHEMA
    assert parameters["contentVersion"] == "1.0.0.0"
    assert parameters["parameters"] == {"namePrefix": {"value": "aos"}}
    declared = template["parameters"]
    for name, entry in parameters["parameters"].items():
        assert name in declared
        value = entry["value"]
        assert declared[name]["minLength"] <= len(value) <= declared[name]["maxLength"]
        assert re.fullmatch(r"[a-z][a-z0-9]*", value)


def test_everything_deploys_in_the_resource_groups_location(template):
    assert template["variables"]["location"] == "[resourceGroup().location]"
    for resource in template["resources"]:
        is_child = resource["type"].count("/") > 1 or resource["type"] == ROLE_ASSIGNMENT
        if is_child:
            assert "location" not in resource, resource["type"]
        else:
            assert resource.get("location") == "[variables('location')]", resource["type"]


def test_monitoring_is_workspace_based(template):
    workspace = only(template, "Microsoft.OperationalInsights/workspaces")
    insights = only(template, "Microsoft.Insights/components")
    assert insights["kind"] == "web"
    assert insights["properties"]["Application_Type"] == "web"
    assert refers_to(
        insights["properties"]["WorkspaceResourceId"],
        "Microsoft.OperationalInsights/workspaces",
        workspace,
    )


def test_storage_account_allows_identity_only(template):
    assert check_storage(template) == []


def test_service_bus_namespace_topics_and_subscriptions(template):
    namespace = only(template, SERVICE_BUS)
    assert namespace["sku"]["name"] == "Standard"
    assert namespace["properties"]["disableLocalAuth"] is True

    def resolved_name(resource):
        return tuple(resolve_arg(s, template) for s in name_segments(resource["name"]))

    bus = resolve(namespace["name"], template)
    topics = {resolved_name(t) for t in resources(template, TOPIC)}
    assert topics == {(bus, "aos-events"), (bus, "aos-agent-messages")}
    subscriptions = resources(template, SUBSCRIPTION)
    assert {resolved_name(s) for s in subscriptions} == {(*t, "aos") for t in topics}
    for subscription in subscriptions:
        props = subscription["properties"]
        assert props["maxDeliveryCount"] == 10
        assert props["deadLetteringOnMessageExpiration"] is True
        assert props["lockDuration"] == "PT1M"


def test_key_vault(template):
    props = only(template, KEY_VAULT)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["tenantId"] == "[subscription().tenantId]"
    assert "accessPolicies" not in props


def test_hosting_plan_is_flex_consumption(template):
    assert check_flex_plan(template) == []
    plan = only(template, PLAN)
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["kind"] == "functionapp"
    assert plan["properties"] == {"reserved": True}
    assert only(template, SITE)["apiVersion"] >= "2023-12-01"  # first with functionAppConfig


def test_function_app_site(template):
    assert check_flex_site(template) == []
    site = only(template, SITE)
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    props = site["properties"]
    assert props["httpsOnly"] is True
    config = props["siteConfig"]
    assert "linuxFxVersion" not in config and "ftpsState" not in config
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"


def test_function_app_config_runtime_and_scale(template):
    app_config = only(template, SITE)["properties"]["functionAppConfig"]
    assert app_config["runtime"] == {"name": "python", "version": "3.11"}
    assert isinstance(app_config["runtime"]["version"], str)
    assert app_config["scaleAndConcurrency"] == {
        "maximumInstanceCount": 100,
        "instanceMemoryMB": 2048,
    }


def test_deployment_package_container_is_private_and_keyless(template):
    storage = only(template, SITE)["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    assert "storageAccountConnectionStringName" not in storage["authentication"]
    container = only(template, CONTAINER)
    assert container["properties"] == {"publicAccess": "None"}
    assert resolve_arg(name_segments(container["name"])[2], template) == "app-package"
    # The identity that reads and writes the package holds Storage Blob Data Owner on the
    # account that holds the container.
    owner = [
        a
        for a in resources(template, ROLE_ASSIGNMENT)
        if STORAGE_BLOB_DATA_OWNER in resolve(a["properties"]["roleDefinitionId"], template)
    ]
    assert len(owner) == 1
    assert _scope_key(owner[0]["scope"]) == resource_key(only(template, STORAGE))
    assert name_segments(container["name"])[0] == name_segments(only(template, STORAGE)["name"])[0]


def test_function_app_settings_are_identity_based(template):
    assert check_app_settings(template) == []


def test_no_keys_or_connection_strings_anywhere(template):
    assert check_no_keys(template) == []


def test_role_assignments_grant_the_function_app_identity(template):
    assert len(resources(template, ROLE_ASSIGNMENT)) == len(EXPECTED_ROLES)
    assert check_role_assignments(template) == []


def test_depends_on_targets_exist(template):
    assert check_depends_on(template) == []


def test_resource_ids_point_at_declared_resources(template):
    assert check_resource_ids(template) == []


def test_references_have_explicit_dependencies(template):
    assert check_reference_dependencies(template) == []


def test_outputs(template):
    outputs = template["outputs"]
    assert set(outputs) == EXPECTED_OUTPUTS
    for output in outputs.values():
        assert output["type"] == "string"
        assert is_expression(output["value"])
    assert outputs["functionAppName"]["value"] == only(template, SITE)["name"]
    assert outputs["storageAccountName"]["value"] == only(template, STORAGE)["name"]
    assert outputs["serviceBusNamespace"]["value"] == only(template, SERVICE_BUS)["name"]
    assert refers_to(outputs["functionAppHostName"]["value"], SITE, only(template, SITE))
    assert outputs["functionAppHostName"]["value"].endswith(".defaultHostName]")
    assert refers_to(outputs["keyVaultUri"]["value"], KEY_VAULT, only(template, KEY_VAULT))
    assert outputs["keyVaultUri"]["value"].endswith(".vaultUri]")


# --------------------------------------------------------------------------------------------
# The checks above must fail on broken templates.
# --------------------------------------------------------------------------------------------


def _drop_setting(t, name):
    pairs = only(t, SITE)["properties"]["siteConfig"]["appSettings"]
    pairs[:] = [p for p in pairs if p["name"] != name]


def _set_setting(t, name, value):
    only(t, SITE)["properties"]["siteConfig"]["appSettings"].append({"name": name, "value": value})


def _first(t, type_):
    return resources(t, type_)[0]


def _app_config(t):
    return only(t, SITE)["properties"]["functionAppConfig"]


def _deployment_storage(t):
    return _app_config(t)["deployment"]["storage"]


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], Callable[..., list[str]]]] = {
    "plan back on Linux Consumption": (
        lambda t: only(t, PLAN).update(sku={"name": "Y1", "tier": "Dynamic"}),
        check_flex_plan,
    ),
    "site without functionAppConfig": (
        lambda t: only(t, SITE)["properties"].pop("functionAppConfig"),
        check_flex_site,
    ),
    "runtime version as a number": (
        lambda t: _app_config(t)["runtime"].update(version=3.11),
        check_flex_site,
    ),
    "wrong runtime": (
        lambda t: _app_config(t)["runtime"].update(name="node"),
        check_flex_site,
    ),
    "scale limit below the Flex minimum": (
        lambda t: _app_config(t)["scaleAndConcurrency"].update(maximumInstanceCount=10),
        check_flex_site,
    ),
    "deployment storage with a connection string": (
        lambda t: _deployment_storage(t).update(
            authentication={
                "type": "StorageAccountConnectionString",
                "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING",
            }
        ),
        check_flex_site,
    ),
    "deployment storage points at an undeclared container": (
        lambda t: _deployment_storage(t).update(
            value=_deployment_storage(t)["value"].replace(
                "variables('packageContainerName')", "'no-such-container'"
            )
        ),
        check_flex_site,
    ),
    "deployment storage is not the account's blob endpoint": (
        lambda t: _deployment_storage(t).update(
            value="[concat('https://elsewhere.blob.core.windows.net/', "
            "variables('packageContainerName'))]"
        ),
        check_flex_site,
    ),
    "public deployment container": (
        lambda t: only(t, CONTAINER)["properties"].update(publicAccess="Blob"),
        check_flex_site,
    ),
    "site created before its deployment container": (
        lambda t: only(t, SITE).update(
            dependsOn=[d for d in only(t, SITE)["dependsOn"] if "containers" not in d]
        ),
        check_flex_site,
    ),
    "linuxFxVersion back in siteConfig": (
        lambda t: only(t, SITE)["properties"]["siteConfig"].update(linuxFxVersion="Python|3.11"),
        check_flex_site,
    ),
    "ftpsState in siteConfig": (
        lambda t: only(t, SITE)["properties"]["siteConfig"].update(ftpsState="Disabled"),
        check_flex_site,
    ),
    "FUNCTIONS_WORKER_RUNTIME app setting": (
        lambda t: _set_setting(t, "FUNCTIONS_WORKER_RUNTIME", "python"),
        check_app_settings,
    ),
    "FUNCTIONS_EXTENSION_VERSION app setting": (
        lambda t: _set_setting(t, "FUNCTIONS_EXTENSION_VERSION", "~4"),
        check_app_settings,
    ),
    "WEBSITE_RUN_FROM_PACKAGE app setting": (
        lambda t: _set_setting(
            t,
            "WEBSITE_RUN_FROM_PACKAGE",
            "https://example.blob.core.windows.net/app-package/app.zip",
        ),
        check_app_settings,
    ),
    "missing app setting": (
        lambda t: _drop_setting(t, "ServiceBusConnection__fullyQualifiedNamespace"),
        check_app_settings,
    ),
    "wrong app setting value": (
        lambda t: (
            _drop_setting(t, "AzureWebJobsStorage__credential"),
            _set_setting(t, "AzureWebJobsStorage__credential", "connectionstring"),
        ),
        check_app_settings,
    ),
    "key-based storage connection": (
        lambda t: _set_setting(
            t,
            "AzureWebJobsStorage",
            "[format('DefaultEndpointsProtocol=https;AccountName={0};AccountKey={1}', "
            "variables('storageAccountName'), listKeys(resourceId('Microsoft.Storage/"
            "storageAccounts', variables('storageAccountName')), '2023-05-01').keys[0].value)]",
        ),
        lambda t: check_app_settings(t) + check_no_keys(t),
    ),
    "shared key access allowed": (
        lambda t: only(t, STORAGE)["properties"].update(allowSharedKeyAccess=True),
        check_storage,
    ),
    "undeclared parameter": (
        lambda t: only(t, KEY_VAULT)["properties"].update(tenantId="[parameters('tenant')]"),
        check_parameters,
    ),
    "unused parameter": (
        lambda t: t["parameters"].update(extra={"type": "string", "defaultValue": "x"}),
        check_parameters,
    ),
    "undeclared variable": (
        lambda t: t["variables"].pop("eventsTopicName"),
        check_variables,
    ),
    "dependsOn a missing resource": (
        lambda t: _first(t, SUBSCRIPTION)["dependsOn"].__setitem__(
            0,
            "[resourceId('Microsoft.ServiceBus/namespaces/topics', "
            "variables('serviceBusName'), 'no-such-topic')]",
        ),
        check_depends_on,
    ),
    "reference without dependsOn": (
        lambda t: only(t, SITE)["dependsOn"].remove(
            "[resourceId('Microsoft.KeyVault/vaults', variables('keyVaultName'))]"
        ),
        check_reference_dependencies,
    ),
    "role granted to someone else": (
        lambda t: _first(t, ROLE_ASSIGNMENT)["properties"].update(
            principalId="[reference(resourceId('Microsoft.KeyVault/vaults', "
            "variables('keyVaultName')), '2023-07-01', 'full').identity.principalId]"
        ),
        check_role_assignments,
    ),
    "role assignment missing": (
        lambda t: t["resources"].remove(resources(t, ROLE_ASSIGNMENT)[-1]),
        check_role_assignments,
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch_broken_templates(template, mutation):
    breaks, check = MUTATIONS[mutation]
    assert check(template) == []  # fine before
    broken = copy.deepcopy(template)
    breaks(broken)
    assert check(broken) != [], f"{mutation} went unnoticed"
