"""AgentStore: everything an agent persists, over one set of storage clients."""

from __future__ import annotations

from aos.governance.audit import AuditTrail
from aos.governance.policies import PolicyStore
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.context import ContextStore
from aos.storage.registry import AgentRegistry


class AgentStore:
    """An agent's registry row, its context store, the policies and the audit trail, sharing
    one set of clients."""

    def __init__(self, clients: StorageClients, settings: Settings) -> None:
        self.clients = clients
        self.registry = AgentRegistry(clients, settings)
        self.context = ContextStore(clients, settings)
        self.audit = AuditTrail(clients, settings)
        self.policies = PolicyStore(clients, settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AgentStore:
        settings = settings or Settings.from_env()
        return cls(StorageClients.from_settings(settings), settings)

    async def close(self) -> None:
        await self.clients.close()

    async def __aenter__(self) -> AgentStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
