"""MCP access to an agent's persistent context (see `aos.mcp.server`).

`ContextMCPServer(agent_id, store, goals=None)` builds the server for one agent;
`aos.mcp.http.handle_mcp_request` serves one streamable-HTTP request statelessly;
`python -m aos.mcp --agent <id>` serves it over stdio.
"""

from aos.mcp.server import ContextMCPServer, GoalWriter, RegistryGoalWriter, render_system_prompt

__all__ = ["ContextMCPServer", "GoalWriter", "RegistryGoalWriter", "render_system_prompt"]
