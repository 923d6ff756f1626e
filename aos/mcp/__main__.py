"""`python -m aos.mcp --agent <id>`: serve one agent's context over MCP on stdin/stdout.

Settings come from the environment, plus the `Values` of ./local.settings.json (or the file
named by --settings) for any not already set. Logs go to stderr; stdout carries MCP only.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from aos.errors import AOSError
from aos.settings import Settings, prepare_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aos.mcp", description="Serve an AOS agent's context over MCP (stdio)."
    )
    parser.add_argument("--agent", required=True, help="id of the agent to serve, e.g. 'ceo'")
    parser.add_argument(
        "--settings",
        default="local.settings.json",
        help="local.settings.json whose Values fill unset environment variables",
    )
    args = parser.parse_args(argv)
    try:
        prepare_environment(args.settings)
        settings = Settings.from_env()
        return anyio.run(_serve, args.agent, settings)
    except AOSError as exc:
        print(f"aos.mcp: {exc.message}", file=sys.stderr)
        return 2


async def _serve(agent_id: str, settings: Settings) -> int:
    from aos.mcp.server import ContextMCPServer
    from aos.storage.store import AgentStore

    async with AgentStore.from_settings(settings) as store:
        server = ContextMCPServer(agent_id, store)
        await server.run_stdio()
    return 0


if __name__ == "__main__":
    sys.exit(main())
