"""The policy store: named policies in one Table, and which of them bind an agent.

One row per policy (partition `policy`, row key its name). An agent is bound by the policies its
definition names and by those that list its role. A name the definition gives but the store
does not hold binds as a policy that denies everything: a missing policy must never mean
"anything goes".
"""

from __future__ import annotations

import json
from typing import Any

from aos.agents.models import AgentDefinition, Slug
from aos.errors import NotFoundError
from aos.governance.policy import Policy, PolicyRule
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.paging import MAX_PAGE_SIZE, Page, query_page
from aos.storage.tables import TableSet, storage_errors

_PARTITION = "policy"


class PolicyStore:
    def __init__(self, clients: StorageClients, settings: Settings) -> None:
        self._tables = TableSet(clients.tables())
        self.table_name = f"{settings.storage_prefix}policies"

    async def put(self, policy: Policy) -> None:
        """Create or replace a policy."""
        table = await self._tables.get(self.table_name)
        entity = {
            "PartitionKey": _PARTITION,
            "RowKey": policy.name,
            "body": policy.model_dump_json(),
        }
        with storage_errors(f"policy '{policy.name}'", field="name"):
            await table.upsert_entity(entity)

    async def exists(self, name: Slug) -> bool:
        try:
            await self.get(name)
        except NotFoundError:
            return False
        return True

    async def get(self, name: Slug) -> Policy:
        table = await self._tables.get(self.table_name)
        with storage_errors(f"policy '{name}'", field="name"):
            entity = await table.get_entity(_PARTITION, name)
        return _from_entity(entity)

    async def delete(self, name: Slug) -> None:
        table = await self._tables.get(self.table_name)
        with storage_errors(f"policy '{name}'", field="name"):
            await table.delete_entity(_PARTITION, name)

    async def list(self, *, page_size: int = 50, continuation: str | None = None) -> Page[Policy]:
        table = await self._tables.get(self.table_name)
        entities, token = await query_page(
            table,
            scope="policies",
            query_filter="PartitionKey eq @p",
            parameters={"p": _PARTITION},
            page_size=page_size,
            continuation=continuation,
        )
        return Page(items=[_from_entity(e) for e in entities], continuation=token)

    async def binding(self, definition: AgentDefinition) -> list[Policy]:
        """The policies that bind an agent: those it names (in its order), then those for its
        role (by name). A named policy that does not exist binds as one that denies all."""
        found: dict[str, Policy] = {}
        continuation = None
        while True:
            page = await self.list(page_size=MAX_PAGE_SIZE, continuation=continuation)
            for policy in page.items:
                if policy.binds(definition.policies, definition.role):
                    found[policy.name] = policy
            if page.continuation is None:
                break
            continuation = page.continuation
        named = [found.get(name) or missing_policy(name) for name in definition.policies]
        by_role = sorted(
            (p for p in found.values() if p.name not in definition.policies), key=lambda p: p.name
        )
        return named + by_role


def missing_policy(name: str) -> Policy:
    return Policy(
        name=name,
        description="stands in for a policy the agent names but the store does not hold",
        default="deny",
        rules=[
            PolicyRule(
                rule_id="missing",
                effect="deny",
                reason=f"policy '{name}' does not exist; create it with PUT /api/policies/{name}",
            )
        ],
    )


def _from_entity(entity: dict[str, Any]) -> Policy:
    return Policy.model_validate(json.loads(entity["body"]))
