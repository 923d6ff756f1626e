"""`python -m aos`: register agents, send them events, show what they hold, run Azurite.

Settings come from the environment and, as with Core Tools, from local.settings.json in the
current folder (environment variables win).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aos.agents.agent import PurposeDrivenAgent, TurnResult
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.routing import route_event
from aos.errors import AOSError
from aos.settings import Settings, prepare_environment
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


async def run_local(location: Path, port: int, keep_serving: bool) -> None:
    """The local main job: Azurite, the function app on the local host, the sample agents
    registered over HTTP and the sample events sent through the local broker; then each
    agent's state as the admin API reports it. Serves until Ctrl-C unless told otherwise."""
    import aiohttp

    from aos.devhost.azurite import DEFAULT_PORTS, Azurite, port_open
    from aos.devhost.host import LocalHost

    azurite = None
    if not any(port_open(p) for p in DEFAULT_PORTS):
        azurite = Azurite(location).start()
        print(f"== Azurite started on 127.0.0.1:10000-10002 (data in {location})")
    else:
        print("== using the Azurite already listening on 127.0.0.1:10000-10002")
    host = LocalHost(Path.cwd(), port=port)
    try:
        await host.start()
        assert host.keys is not None
        print(f"== AOS is running on {host.url} (function key: {host.keys.function})")
        headers = {"x-functions-key": host.keys.master}
        async with aiohttp.ClientSession(host.url, headers=headers) as http:
            for policy in _read_json_list(SAMPLES / "policies.json"):
                async with http.put(f"/api/policies/{policy['name']}", json=policy) as response:
                    if response.status not in (200, 201):
                        raise AOSError(f"writing policy {policy['name']}: {await response.text()}")
                    print(f"   policy {policy['name']} for roles {', '.join(policy['roles'])}")
            for entry in _read_json_list(SAMPLES / "agents.json"):
                async with http.post("/api/agents", json=entry) as response:
                    agent_id = entry["definition"]["agent_id"]
                    state = "registered" if response.status == 201 else "already registered"
                    print(f"   {agent_id:<10} {state}")
            events = _read_json_list(SAMPLES / "events.json")
            topic = host.settings.events_topic
            async with http.post(f"/devhost/topics/{topic}/messages", json=events) as response:
                if response.status != 201:
                    raise AOSError(f"sending the sample events failed: {await response.text()}")
            print(f"== sent {len(events)} events to topic '{topic}'; waiting for the turns")
            await _wait_for_turns(
                http,
                [e["definition"]["agent_id"] for e in _read_json_list(SAMPLES / "agents.json")],
            )
        if keep_serving:
            print(f"\n== serving {host.url}/api (OpenAPI at /api/openapi.json); Ctrl-C stops")
            await _until_interrupted()
    finally:
        try:
            await host.stop()
        finally:
            if azurite is not None:
                azurite.stop()


async def _wait_for_turns(http: Any, agent_ids: list[str], patience: float = 60.0) -> None:
    """Poll the agents until events have arrived and every queue and turn has settled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    agents: dict[str, Any] = {}
    previous = None
    while loop.time() < deadline:
        for agent_id in agent_ids:
            async with http.get(f"/api/agents/{agent_id}") as response:
                agents[agent_id] = await response.json() if response.status == 200 else None
        seen = {a: s["counters"] if s else None for a, s in agents.items()}
        busy = any(s is None or s["pending_events"] or s["active_turn"] for s in agents.values())
        arrived = any(c and c["events_received"] for c in seen.values())
        if arrived and not busy and seen == previous:
            break
        previous = seen
        await asyncio.sleep(1.0)
    for agent_id, agent in agents.items():
        if agent is None:
            print(f"\n{agent_id}: not ready")
            continue
        counters = agent["counters"]
        print(f"\n{agent_id} [{agent['lifecycle']}] {agent['definition']['purpose']}")
        print(
            f"  events {counters['events_received']}, duplicates dropped "
            f"{counters['duplicates_dropped']}, decisions {counters['decisions']} "
            f"(acted {counters['actions_taken']}, declined {counters['actions_declined']}, "
            f"denied by policy {counters['actions_denied']})"
        )
        for memory in agent["working_memory"][-3:]:
            print(f"  - {memory['text']}")
        async with http.get(f"/api/agents/{agent_id}/audit/verify") as response:
            chain = await response.json()
        state = "intact" if chain["valid"] else f"BROKEN at {chain['broken']}"
        print(f"  audit chain: {chain['records']} records, {state}")


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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
    commands.add_parser("azurite", help="run Azurite").add_argument(
        "--location", type=Path, default=Path(".azurite"), help="Azurite data folder"
    )
    runner = commands.add_parser("run", help="run AOS locally with the sample agents")
    runner.add_argument("--location", type=Path, default=Path(".azurite"))
    runner.add_argument("--port", type=int, default=7071)
    runner.add_argument(
        "--once", action="store_true", help="stop after the sample events are handled"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prepare_environment(args.settings)
        if args.command == "register":
            asyncio.run(_with_store(register, args.file))
        elif args.command == "send":
            asyncio.run(_with_store(send, args.file))
        elif args.command == "show":
            asyncio.run(_with_store(show, args.agent_id, args.events))
        elif args.command == "azurite":
            run_azurite(args.location)
        else:
            asyncio.run(run_local(args.location, args.port, keep_serving=not args.once))
    except (AOSError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
