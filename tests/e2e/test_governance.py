"""Governance on the local host process: AOS_ADMIN_AUTH=entra (routes anonymous at the host,
tokens checked by AOS against a local identity provider), roles, a policy that routes an action
into approval, and the agent's audit chain verified at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from tests.governance.identity import AUDIENCE, TENANT, IdentityProvider, sign
from tests.support import CEO

from .conftest import Host, Reply


def bearer(keys: dict[str, rsa.RSAPrivateKey], role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(keys['k1'], roles=[role])}"}


async def call(host: Host, method: str, path: str, body: Any = None, **headers: str) -> Reply:
    """A request without a function key; off the event loop, which serves the identity
    provider the host fetches keys from meanwhile."""
    return await asyncio.to_thread(host.request, method, path, body, key=None, headers=headers)


async def until(probe: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_approval_gated_action_with_entra_id_roles(
    start_host: Callable[..., Host], idp: IdentityProvider, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    from .conftest import REPO

    host = await asyncio.to_thread(
        start_host,
        REPO,
        AOS_ADMIN_AUTH="entra",
        AOS_AUTH_TENANT_ID=TENANT,
        AOS_AUTH_AUDIENCE=AUDIENCE,
        AOS_AUTH_AUTHORITY=idp.url,
    )
    admin, operator, reader = (
        bearer(keys, role) for role in ("AOS.Admin", "AOS.Operator", "AOS.Reader")
    )
    assert (await call(host, "GET", "/api/health")).status == 200
    assert (await call(host, "GET", "/api/agents")).status == 401
    keyed = await asyncio.to_thread(host.request, "GET", "/api/agents")  # a function key
    assert keyed.status == 401

    policy = {
        "name": "big-spend",
        "rules": [{"rule_id": "over-1000", "effect": "require_approval", "kinds": ["option"],
                   "cost_above": 1000}],
    }  # fmt: skip
    assert (await call(host, "PUT", "/api/policies/big-spend", policy, **operator)).status == 403
    assert (await call(host, "PUT", "/api/policies/big-spend", policy, **admin)).status == 201
    definition = {"definition": {**CEO, "policies": ["big-spend"]}}
    assert (await call(host, "POST", "/api/agents", definition, **admin)).status == 201

    option = {"action": "Draft a strategic plan to grow revenue", "cost": 5000}
    event = {
        "id": "e-1", "source": "/board", "type": "board.request",
        "data": {"situation": "Budget approved", "options": ["Order pizza", option]},
    }  # fmt: skip
    assert (await call(host, "POST", "/api/agents/ceo/events", event, **reader)).status == 403
    assert (await call(host, "POST", "/api/agents/ceo/events", event, **operator)).status == 202

    async def awaiting() -> str | None:
        """The approval, once its workflow is open for an answer (the entity names it a moment
        before the workflow starts)."""
        state = (await call(host, "GET", "/api/agents/ceo", **reader)).body
        approval_id = (state.get("active_turn") or {}).get("awaiting_approval")
        if approval_id is None:
            return None
        status = await call(host, "GET", f"/api/workflows/{approval_id}", **reader)
        return approval_id if status.status == 200 and status.body["custom_status"] else None

    approval_id = await until(awaiting, "the turn to wait for approval")
    answer = {"decision": "approve", "by": "alice"}
    path = f"/api/workflows/{approval_id}/approval"
    assert (await call(host, "POST", path, answer, **operator)).status == 202

    async def decided() -> dict | None:
        items = (await call(host, "GET", "/api/agents/ceo/history", **reader)).body["items"]
        outcome = items[0]["outcome"] if items else None
        return outcome if outcome and outcome.get("status") == "decided" else None

    outcome = await until(decided, "the approved turn")
    assert (outcome["outcome"], outcome["policy"]["verdict"]) == ("act", "approved")
    chain = (await call(host, "GET", "/api/agents/ceo/audit", **reader)).body["items"]
    assert chain[0]["actor"] == "entra:alice@contoso.com"
    assert [r["kind"] for r in chain].count("approval") == 2
    verified = await call(host, "GET", "/api/agents/ceo/audit/verify", **reader)
    assert verified.body["valid"] is True
