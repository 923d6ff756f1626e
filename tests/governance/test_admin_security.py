"""The admin API's security through the function app: Entra ID tokens signed by a test key and
checked against a local identity provider, roles per route, App Service's principal header,
approvers, and input hardening (sizes, depth, ids)."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from aos.api.http import MAX_BODY_BYTES, MAX_JSON_DEPTH
from aos.api.openapi import ROUTES
from tests.governance.identity import AUDIENCE, TENANT, IdentityProvider, sign
from tests.support import CEO, CFO, App, Reply, board_request

ROLE_BELOW = {"reader": None, "operator": "AOS.Reader", "admin": "AOS.Operator"}
APP_ROLE = {"reader": "AOS.Reader", "operator": "AOS.Operator", "admin": "AOS.Admin"}
ROUTE_VALUES = {
    "agent_id": "ceo", "goal_id": "g-1", "workflow": "chain", "instance_id": "nothing-here",
    "name": "quiet",
}  # fmt: skip


@pytest.fixture
def entra(app: App, idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch) -> App:
    """The app with AOS_ADMIN_AUTH=entra, trusting the local identity provider."""
    monkeypatch.setenv("AOS_ADMIN_AUTH", "entra")
    monkeypatch.setenv("AOS_AUTH_TENANT_ID", TENANT)
    monkeypatch.setenv("AOS_AUTH_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("AOS_AUTH_AUTHORITY", idp.url)
    return app


def token_headers(keys: dict[str, rsa.RSAPrivateKey], role: str | None, **claims: object) -> dict:
    token = sign(keys["k1"], roles=[role] if role else None, **claims)
    return {"authorization": f"Bearer {token}", "x-functions-key": ""}


async def call_route(app: App, route: object, headers: dict) -> Reply:
    path = route.path.removeprefix("/api/")  # type: ignore[attr-defined]
    names = re.findall(r"\{(\w+)\}", path)
    params = {name: ROUTE_VALUES[name] for name in names}
    return await app.call(
        route.operation_id,  # type: ignore[attr-defined]
        route.method.upper(),  # type: ignore[attr-defined]
        path.format(**params),
        raw=b"{}",
        route=params,
        headers=headers,
    )


async def test_every_route_refuses_the_role_below_its_own_and_admits_its_own(
    entra: App, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    await entra.register(CEO, headers=token_headers(keys, "AOS.Admin"))
    await entra.settle()
    checked = 0
    for route in ROUTES:
        if not route.auth:
            continue
        below = await call_route(entra, route, token_headers(keys, ROLE_BELOW[route.role]))
        assert below.status == 403, (route.operation_id, route.method, below.body)
        assert below.body["error"]["code"] == "forbidden"
        own = await call_route(entra, route, token_headers(keys, APP_ROLE[route.role]))
        assert own.status not in (401, 403), (route.operation_id, route.method, own.body)
        checked += 1
    assert checked == len([r for r in ROUTES if r.auth])


async def test_bad_tokens_are_401_and_never_echoed(
    entra: App, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    now = int(time.time())
    cases = {
        "expired": sign(keys["k1"], roles=["AOS.Admin"], exp=now - 3600, nbf=now - 7200),
        "wrong audience": sign(keys["k1"], roles=["AOS.Admin"], aud="api://someone-else"),
        "wrong issuer": sign(keys["k1"], roles=["AOS.Admin"], iss="https://evil.example/v2.0"),
        "unknown key": sign(keys["rogue"], kid="rogue", roles=["AOS.Admin"]),
    }
    for case, token in cases.items():
        reply = await entra.call(
            "list_agents", "GET", "agents",
            headers={"authorization": f"Bearer {token}", "x-functions-key": ""},
        )  # fmt: skip
        assert reply.status == 401, case
        assert reply.body["error"]["code"] == "unauthenticated"
        challenge = reply.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer error="invalid_token"'), case
        for part in token.split("."):
            assert part not in json.dumps(reply.body) and part not in challenge, case

    nothing = await entra.call("list_agents", "GET", "agents", headers={"x-functions-key": ""})
    assert nothing.status == 401 and nothing.headers["WWW-Authenticate"] == "Bearer"
    # A function key means nothing once the host no longer checks keys.
    key_only = await entra.call("list_agents", "GET", "agents", headers={"x-functions-key": "k"})
    assert key_only.status == 401


async def test_changes_are_audited_as_the_signed_in_caller(
    entra: App, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    admin = token_headers(keys, "AOS.Admin")
    assert (await entra.register(CEO, headers=admin)).status == 201
    await entra.settle()
    chain = await entra.call(
        "agent_audit", "GET", "agents/ceo/audit", route={"agent_id": "ceo"}, headers=admin
    )
    (record,) = chain.body["items"]
    assert record["actor"] == "entra:alice@contoso.com"
    assert record["data"]["operation"] == "register"


async def test_app_service_principal_header_counts_only_when_the_platform_sets_it(
    entra: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    principal = {
        "auth_typ": "aad",
        "name_typ": "preferred_username",
        "role_typ": "roles",
        "claims": [
            {"typ": "preferred_username", "val": "carol@contoso.com"},
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "c1"},
            {"typ": "roles", "val": "AOS.Reader"},
        ],
    }
    headers = {
        "x-ms-client-principal": base64.b64encode(json.dumps(principal).encode()).decode(),
        "x-functions-key": "",
    }
    assert (await entra.call("list_agents", "GET", "agents", headers=headers)).status == 401
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert (await entra.call("list_agents", "GET", "agents", headers=headers)).status == 200
    refused = await entra.register(CEO, headers=headers)
    assert refused.status == 403
    assert "carol@contoso.com" in refused.body["error"]["message"]


async def test_only_a_named_approver_may_answer(
    entra: App, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    operator = token_headers(keys, "AOS.Operator")
    started = await entra.call(
        "start_workflow", "POST", "workflows/approval",
        {"subject": "Buy a company", "approvers": ["bob@contoso.com"], "timeout_seconds": 600},
        route={"workflow": "approval"}, headers=operator,
    )  # fmt: skip
    assert started.status == 202, started.body
    instance = started.body["id"]
    await entra.settle()

    async def answer(headers: dict) -> Reply:
        return await entra.call(
            "send_approval", "POST", f"workflows/{instance}/approval",
            {"decision": "approve", "by": "someone"}, route={"instance_id": instance},
            headers=headers,
        )  # fmt: skip

    alice = await answer(operator)
    assert alice.status == 403 and alice.body["error"]["field"] == "approvers"
    # A display name is not who someone is: only the sign-in name or object id count.
    named_bob = token_headers(keys, "AOS.Operator", preferred_username=None, name="bob@contoso.com")
    assert (await answer(named_bob)).status == 403
    bob = token_headers(keys, "AOS.Operator", preferred_username="bob@contoso.com")
    assert (await answer(bob)).status == 202
    status = await entra.engine.wait_for(instance, timeout=30)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["by"] == "bob@contoso.com"  # who signed in, not the body's "someone"


# -- input hardening (function keys, the default) ----------------------------------------------


async def test_oversized_deep_and_malformed_bodies_are_refused(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"
    for function, path, route in [
        ("post_event", "agents/ceo/events", {"agent_id": "ceo"}),
        ("agent_mcp", "agents/ceo/mcp", {"agent_id": "ceo"}),
        ("put_policy", "policies/p", {"name": "p"}),
    ]:
        reply = await app.call(function, "POST", path, raw=oversized, route=route)
        assert reply.status == 413, function
        assert reply.body["error"] == {
            "code": "payload_too_large",
            "message": f"the body is {len(oversized)} bytes; at most {MAX_BODY_BYTES} are accepted",
            "field": "body",
        }

    deep: object = "bottom"
    for _ in range(MAX_JSON_DEPTH):
        deep = {"d": deep}
    event = {**board_request("e-deep"), "data": deep}
    reply = await app.post_event("ceo", event)
    assert reply.status == 400
    assert reply.body["error"]["message"] == f"the body nests deeper than {MAX_JSON_DEPTH} levels"
    very_deep = b"[" * 100_000 + b"]" * 100_000
    reply = await app.call(
        "post_event", "POST", "agents/ceo/events", raw=very_deep, route={"agent_id": "ceo"}
    )
    assert reply.status == 400 and reply.body["error"]["field"] == "body"
    broken = await app.call(
        "post_event", "POST", "agents/ceo/events", raw=b'{"id": ', route={"agent_id": "ceo"}
    )
    assert broken.status == 400 and "not valid JSON" in broken.body["error"]["message"]
    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    assert history.body["items"] == []  # nothing refused was written


@pytest.mark.parametrize(
    ("function", "route"),
    [
        ("get_agent", {"agent_id": "../cfo"}),
        ("get_agent", {"agent_id": "CFO"}),
        ("agent_history", {"agent_id": "cfo'or'1'eq'1"}),
        ("agent_audit", {"agent_id": "_governance"}),
        ("update_goal", {"agent_id": "ceo", "goal_id": "g/../../x"}),
        ("get_policy", {"name": "a b"}),
    ],
)
async def test_crafted_ids_are_refused_before_any_lookup(
    app: App, function: str, route: dict
) -> None:
    reply = await app.call(function, "GET", "x", raw=b'{"progress": 0.5}', route=route)
    assert reply.status == 400, reply.body
    assert reply.body["error"]["field"] in route


async def test_a_continuation_token_cannot_page_another_agents_history(app: App) -> None:
    await app.register(CEO)
    await app.register(CFO)
    await app.settle()
    for n in range(3):
        await app.post_event("ceo", board_request(f"e-{n}"))
    await app.settle()
    page = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"},
        params={"page_size": "1"},
    )  # fmt: skip
    token = page.body["continuation"]
    assert token
    other = await app.call(
        "agent_history", "GET", "agents/cfo/history", route={"agent_id": "cfo"},
        params={"page_size": "1", "continuation": token},
    )  # fmt: skip
    assert other.status == 400 and other.body["error"]["field"] == "continuation"
