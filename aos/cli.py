"""`python -m aos`: register agents, send them events, show what they hold, run Azurite.

Settings come from the environment and, as with Core Tools, from local.settings.json in the
current folder (environment variables win).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aos.agents.agent import PurposeDrivenAgent, TurnResult
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.routing import route_event
from aos.errors import AOSError
from aos.settings import Settings, load_local_settings
from aos.storage.store import AgentStore

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _read_json_list(path: Path) -> list[Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AOSError(f"cannot read {path}: {exc}", field=str(path)) from None
    return document if isinstance(document, list) else [document]


async def register(store: AgentStore, path: Path) -> None:
    """Register (or load) each agent in the file, start it, and add its goals."""
    for entry in _read_json_list(path):
        definition = AgentDefinition.model_validate(entry["definition"])
        agent = PurposeDrivenAgent.from_definition(definition, store)
        await agent.initialize()
        await agent.start()
        for goal in entry.get("goals", []):
            await agent.add_goal(goal["description"], goal_id=goal.get("goal_id"))
        print(f"registered {agent.agent_id:<10} {agent.state.lifecycle}: {definition.purpose}")


def _describe(agent_id: str, event: EventEnvelope, result: TurnResult) -> str:
    head = f"{agent_id:<10} <- {event.type} ({event.id}): "
    if result.duplicate:
        return head + "duplicate, nothing changed"
    decision = result.decision
    if decision is None:
        return head + "observed (no decision asked)"
    if decision.outcome == "act":
        score = decision.options[0].alignment.score
        return head + f"act '{decision.chosen}' (alignment {score:.2f})"
    return head + f"declined: {decision.reasons[0]}"


async def send(store: AgentStore, path: Path) -> None:
    """Deliver each event in the file to the agents it is for, one turn each, in file order."""
    definitions = [record.definition async for record in store.registry.all()]
    agents: dict[str, PurposeDrivenAgent] = {}
    for raw in _read_json_list(path):
        event = EventEnvelope.model_validate(raw)
        targets = route_event(event, definitions)
        if not targets:
            print(f"{'(nobody)':<10} <- {event.type} ({event.id}): no agent is subscribed")
        for agent_id in targets:
            if agent_id not in agents:
                definition = next(d for d in definitions if d.agent_id == agent_id)
                agents[agent_id] = PurposeDrivenAgent.from_definition(definition, store)
                await agents[agent_id].initialize()
            result = await agents[agent_id].handle_event(event)
            print(_describe(agent_id, event, result))


async def show(store: AgentStore, agent_id: str | None, events: int) -> None:
    """Print each agent's persisted state and latest history, as read from storage."""
    if agent_id:
        records = [await store.registry.get(agent_id)]
    else:
        records = [record async for record in store.registry.all()]
    if not records:
        print("no agents are registered")
    for record in records:
        state = record.state
        counters = state.counters
        print(f"\n{record.agent_id} [{state.lifecycle}] {record.definition.purpose}")
        print(
            f"  events {counters.events_received}, duplicates dropped "
            f"{counters.duplicates_dropped}, decisions {counters.decisions} "
            f"(acted {counters.actions_taken}, declined {counters.actions_declined})"
        )
        for goal in state.goals:
            print(f"  goal {goal.goal_id}: {goal.description} [{goal.status}, {goal.progress:.0%}]")
        history = await store.context.list_events(record.agent_id, page_size=events)
        for stored in history.items:
            outcome = stored.outcome or {}
            summary = outcome.get("chosen") or outcome.get("outcome") or outcome.get("status")
            print(f"  {stored.recorded_at:%Y-%m-%d %H:%M:%S} {stored.event.type}: {summary}")


def run_azurite(location: Path) -> None:
    """Run Azurite in the foreground on its default ports until interrupted."""
    from aos.devhost.azurite import Azurite

    azurite = Azurite(location).start()
    print(f"Azurite is listening on 127.0.0.1:10000-10002 (data in {location}); Ctrl-C stops it")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        azurite.stop()


def demo(location: Path) -> None:
    """The local main job: register the sample agents, send them events, restart storage and
    read their state back in a new process."""
    from aos.devhost.azurite import DEFAULT_PORTS, Azurite, port_open

    if any(port_open(port) for port in DEFAULT_PORTS):
        raise AOSError(
            "ports 10000-10002 are in use (is Azurite already running?): stop it, or use "
            "`python -m aos register/send/show` against it"
        )
    azurite = Azurite(location)
    os.environ["AzureWebJobsStorage"] = azurite.connection_string
    with azurite:
        print(f"== Azurite started (data in {location})\n== registering sample agents")
        asyncio.run(_with_store(register, SAMPLES / "agents.json"))
        print("== sending sample events")
        asyncio.run(_with_store(send, SAMPLES / "events.json"))
    print("== Azurite stopped; starting it again and reading state from a new process")
    with Azurite(location):
        subprocess.run([sys.executable, "-m", "aos", "show"], check=True)


async def _with_store(command: Any, *args: Any) -> None:
    async with AgentStore.from_settings(Settings.from_env()) as store:
        await command(store, *args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aos", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", default="local.settings.json", help="local settings file (if present)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("register", help="register agents from a JSON file").add_argument(
        "file", type=Path
    )
    commands.add_parser("send", help="send events from a JSON file").add_argument("file", type=Path)
    show_parser = commands.add_parser("show", help="show agents' persisted state")
    show_parser.add_argument("agent_id", nargs="?")
    show_parser.add_argument("--events", type=int, default=5, help="history lines per agent")
    for name, text in (("azurite", "run Azurite"), ("demo", "run the sample end to end")):
        commands.add_parser(name, help=text).add_argument(
            "--location", type=Path, default=Path(".azurite"), help="Azurite data folder"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_local_settings(args.settings)
        if args.command == "register":
            asyncio.run(_with_store(register, args.file))
        elif args.command == "send":
            asyncio.run(_with_store(send, args.file))
        elif args.command == "show":
            asyncio.run(_with_store(show, args.agent_id, args.events))
        elif args.command == "azurite":
            run_azurite(args.location)
        else:
            demo(args.location)
    except (AOSError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
