"""Storage: Table and Blob clients from the app's settings, and the repositories built on them.

- `aos.storage.clients`: the one client factory (connection strings or identity-based settings);
- `aos.storage.registry`: registered agents (definition and state), with ETags and paging;
- `aos.storage.context`: each agent's event history and memories;
- `aos.storage.store`: `AgentStore`, the three together.
"""
