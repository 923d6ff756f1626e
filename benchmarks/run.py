"""Benchmarks: print figures for the costs that matter on every event and every cold start.

Starts its own Azurite on free ports (nothing else needs to run). Figures are wall-clock on this
machine; compare runs on the same machine only.

    .venv/bin/python benchmarks/run.py [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aos.agents.agent import PurposeDrivenAgent
from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.devhost.azurite import Azurite, free_ports
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.store import AgentStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the LoRAX stand-in in tests/inference
CEO = AgentDefinition(
    agent_id="ceo",
    purpose="Strategic oversight and company growth",
    purpose_scope="Strategic planning, major decisions",
    success_criteria=["Revenue growth", "Team expansion"],
    constraints=["Never disclose customer data"],
)


def report(name: str, samples: list[float], unit: str = "ms", scale: float = 1e3) -> None:
    values = sorted(s * scale for s in samples)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    print(
        f"{name:<42} median {statistics.median(values):9.3f} {unit}   "
        f"p95 {p95:9.3f} {unit}   n={len(values)}"
    )


def bench_import(runs: int = 7) -> None:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, check=True)
        samples.append(time.perf_counter() - start)
    bare = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], cwd=ROOT, check=True)
        bare.append(time.perf_counter() - start)
    report("python -c 'import function_app' (process)", samples)
    report("python -c 'pass' (interpreter baseline)", bare)


def bench_alignment(calls: int = 2000) -> None:
    scorer = DeterministicAlignmentScorer()
    actions = ["Draft a strategic plan to grow revenue in Europe", "Order pizza for the office"]
    scorer.score(actions[0], CEO)  # warm the stemmer
    samples = []
    for n in range(calls):
        start = time.perf_counter()
        scorer.score(actions[n % 2], CEO)
        samples.append(time.perf_counter() - start)
    report("alignment score, one action", samples, "us", 1e6)


async def bench_storage(settings: Settings, turns: int) -> None:
    async with AgentStore.from_settings(settings) as store:
        agent = PurposeDrivenAgent.from_definition(CEO, store)
        await agent.initialize()
        await agent.start()
        for goal in range(20):
            await agent.add_goal(f"Goal number {goal} about revenue growth", goal_id=f"g{goal}")

        reads = []
        for _ in range(turns):
            start = time.perf_counter()
            await store.registry.get("ceo")
            reads.append(time.perf_counter() - start)
        report("registry get (Azurite)", reads)

        turn_times, duplicate_times = [], []
        for n in range(turns):
            event = EventEnvelope(
                id=f"bench-{n}",
                source="/bench",
                type="board.request",
                data={"options": ["Order pizza", "Draft a strategic plan to grow revenue"]},
            )
            start = time.perf_counter()
            await agent.handle_event(event)
            turn_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            await agent.handle_event(event)
            duplicate_times.append(time.perf_counter() - start)
        report("agent turn with a decision (Azurite)", turn_times)
        report("duplicate delivery (Azurite)", duplicate_times)
        first, last = turn_times[: turns // 5], turn_times[-(turns // 5) :]
        print(
            f"{'turn cost, first vs last fifth of run':<42} "
            f"{statistics.median(first) * 1e3:.3f} ms -> {statistics.median(last) * 1e3:.3f} ms"
        )


async def bench_hosted_turns(settings: Settings, turns: int) -> None:
    """Turns through the function app on the local durable engine (Table store on Azurite):
    delivery through the SDK's Durable client, entity, orchestration and activities."""
    import os

    import azure.durable_functions as df

    from aos.delivery import deliver
    from aos.devhost.app import load_app
    from aos.devhost.durable import DurableEngine, ManagementApi
    from aos.devhost.durable.table_store import TableDurableStore
    from aos.devhost.host import close_durable_client_session
    from aos.runtime import agent_store, close

    os.environ.update({k: v for k, v in settings.environ.items() if v})
    app = load_app(ROOT)
    async with AgentStore.from_settings(settings) as store:
        durable = TableDurableStore(store.clients, settings, "benchhub")
        async with (
            DurableEngine(app.raw, durable, "benchhub") as engine,
            ManagementApi(engine) as api,
        ):
            client = df.DurableOrchestrationClient(api.client_binding_json())
            await engine.signal_entity(
                "agent",
                "hosted",
                "register",
                {"definition": {**CEO.model_dump(), "agent_id": "hosted"}},
            )
            await engine.wait_until_idle(30)
            await store.registry.register(CEO.model_copy(update={"agent_id": "hosted"}))
            latencies = []
            for n in range(turns):
                event = EventEnvelope(
                    id=f"hosted-{n}",
                    source="/bench",
                    type="board.request",
                    data={"options": ["Order pizza", "Draft a strategic plan to grow revenue"]},
                )
                start = time.perf_counter()
                (delivery,) = await deliver(client, agent_store(), event, only="hosted")
                await engine.wait_for(delivery.instance_id, timeout=60)
                latencies.append(time.perf_counter() - start)
            report("hosted turn, delivery to completion", latencies)
            first, last = latencies[: turns // 5], latencies[-(turns // 5) :]
            print(
                f"{'hosted turn, first vs last fifth of run':<42} "
                f"{statistics.median(first) * 1e3:.3f} ms -> {statistics.median(last) * 1e3:.3f} ms"
            )
        await close()
        await close_durable_client_session()


async def bench_inference(settings: Settings) -> None:
    """Inference client overhead and cache hits, against the local LoRAX stand-in."""
    from aos.inference.bench import bench
    from aos.inference.client import close_shared_clients
    from tests.inference.fakeserver import FakeLorax

    server = FakeLorax()
    await server.start()
    try:
        async with StorageClients.from_settings(settings) as clients:
            await bench(server.url, calls=200, clients=clients, storage_prefix="benchinf")
    finally:
        await server.stop()
        await close_shared_clients()


def bench_policy(calls: int = 2000) -> None:
    """Policy evaluation of a decision with a message and a tool call, under 5 policies of 10
    rules each (none matching, so every rule is looked at)."""
    from aos.agents.agent import decide
    from aos.agents.models import DecisionContext
    from aos.governance.policy import Policy, PolicyUsage, evaluate

    option = {
        "action": "Draft a strategic plan to grow revenue",
        "cost": 500,
        "messages": [{"to": "cfo", "type": "finance.plan.review"}],
        "tool_calls": [{"server": "crm", "tool": "create_plan"}],
    }
    made = decide(
        CEO, [], DecisionContext(options=[option]), DeterministicAlignmentScorer(), "d-bench"
    )
    rules = [
        {"rule_id": f"r{n}", "effect": effect, "targets": [f"other-{n}"], **extra}
        for n, (effect, extra) in enumerate(
            [("deny", {}), ("limit", {"max_calls_per_day": 100}), ("require_approval", {})] * 3
            + [("allow", {})]
        )
    ]
    policies = [Policy(name=f"p{n}", rules=rules) for n in range(5)]
    day = datetime.now(UTC).date()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        evaluate(policies, made, PolicyUsage(), day)
        samples.append(time.perf_counter() - start)
    report("policy check, 5 policies x 10 rules", samples, "us", 1e6)


async def bench_audit(settings: Settings, records: int) -> None:
    """Appends to one agent's audit chain on Azurite, a retried append, and verification."""
    async with AgentStore.from_settings(settings) as store:
        appends, retries = [], []
        for n in range(records):
            start = time.perf_counter()
            await store.audit.append(
                "ceo", "action", actor="agent:ceo", key=f"bench/{n}", data={"n": n}
            )
            appends.append(time.perf_counter() - start)
            start = time.perf_counter()
            await store.audit.append(
                "ceo", "action", actor="agent:ceo", key=f"bench/{n}", data={"n": n}
            )
            retries.append(time.perf_counter() - start)
        report("audit append (Azurite)", appends)
        report("audit append retried (Azurite)", retries)
        start = time.perf_counter()
        verified = await store.audit.verify("ceo")
        elapsed = time.perf_counter() - start
        assert verified.valid, verified
        print(
            f"{'audit verify, whole chain':<42} {elapsed * 1e3:9.1f} ms for {verified.records} "
            f"records ({elapsed / verified.records * 1e6:.0f} us per record)"
        )


async def bench_tokens(calls: int = 500) -> None:
    """Entra ID token validation once the tenant's keys are cached (a local OpenID provider)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from aos.governance.auth import Authenticator, AuthSettings
    from tests.governance.identity import AUDIENCE, TENANT, IdentityProvider, sign

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider = IdentityProvider({"k1": key})
    await provider.start()
    authenticator = Authenticator()
    try:
        settings = AuthSettings.from_env(
            {
                "AOS_ADMIN_AUTH": "entra",
                "AOS_AUTH_TENANT_ID": TENANT,
                "AOS_AUTH_AUDIENCE": AUDIENCE,
                "AOS_AUTH_AUTHORITY": provider.url,
            }
        )
        headers = {"authorization": f"Bearer {sign(key, roles=['AOS.Reader'])}"}
        await authenticator.authenticate(headers, {}, settings)  # fetch and cache the keys
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await authenticator.authenticate(headers, {}, settings)
            samples.append(time.perf_counter() - start)
        report("Entra ID token check (keys cached)", samples, "us", 1e6)
    finally:
        await authenticator.close()
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    bench_import()
    bench_alignment()
    bench_policy()
    asyncio.run(bench_tokens())
    blob, queue, table = free_ports(3)
    with tempfile.TemporaryDirectory() as data, Azurite(Path(data), (blob, queue, table)) as az:
        settings = Settings.from_env({"AzureWebJobsStorage": az.connection_string})
        asyncio.run(bench_storage(settings, args.turns))
        asyncio.run(bench_audit(settings, args.turns))
        hosted = Settings.from_env(
            {"AzureWebJobsStorage": az.connection_string, "AOS_STORAGE_PREFIX": "bench"}
        )
        asyncio.run(bench_hosted_turns(hosted, max(10, args.turns // 4)))
        asyncio.run(bench_inference(settings))


if __name__ == "__main__":
    main()
