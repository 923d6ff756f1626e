"""The audit trail against a real Azurite: appends, idempotency under concurrency, and verify
catching rows edited, deleted or reordered directly in the table."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from aos.errors import InvalidInputError, NotFoundError
from aos.governance.audit import (
    GENESIS_HASH,
    GOVERNANCE_CHAIN,
    MAX_DATA_CHARS,
    AuditChainError,
    AuditRecord,
    AuditTrail,
    check_chain,
    compute_hash,
)
from aos.settings import Settings
from aos.storage.clients import StorageClients

T0 = datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def trail(clients: StorageClients, settings: Settings) -> AuditTrail:
    return AuditTrail(clients, settings)


@pytest.fixture
def table(clients: StorageClients, trail: AuditTrail) -> TableClient:
    """The raw table, for editing rows behind the trail's back."""
    return clients.tables().get_table_client(trail.table_name)


async def append_n(trail: AuditTrail, chain: str, count: int) -> list[AuditRecord]:
    return [
        await trail.append(
            chain,
            "action",
            actor=f"agent:{chain}",
            key=f"{chain}-{i}",
            data={"step": i, "note": "déjà vu"},
            time=T0 + timedelta(minutes=i),
        )
        for i in range(1, count + 1)
    ]


def row(sequence: int) -> str:
    return f"r{sequence:012d}"


# -- appending and reading -------------------------------------------------------------------


async def test_append_get_and_list_round_trip(trail: AuditTrail) -> None:
    first = await trail.append(
        "ceo",
        "decision",
        actor="agent:ceo",
        key="event-1",
        data={"choice": "expand", "confidence": 0.8, "nested": {"b": 1, "a": [1, 2]}},
        correlation_id="corr-1",
        time=datetime(2026, 1, 1, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1))),
    )
    second = await trail.append("ceo", "action", actor="agent:ceo", key="event-2", data={})

    assert first.sequence == 1 and second.sequence == 2
    assert first.previous_hash == GENESIS_HASH
    assert second.previous_hash == first.hash
    assert first.hash == compute_hash(first) and second.hash == compute_hash(second)
    assert first.time == T0 and first.time.utcoffset() == timedelta(0)

    assert await trail.get("ceo", 1) == first
    assert await trail.get("ceo", 2) == second
    page = await trail.list("ceo")
    assert page.items == [first, second]
    assert page.continuation is None


async def test_list_pages_oldest_first(trail: AuditTrail) -> None:
    records = await append_n(trail, "ceo", 5)

    first = await trail.list("ceo", page_size=2)
    assert [r.sequence for r in first.items] == [1, 2]
    rest = await trail.list("ceo", page_size=3, continuation=first.continuation)
    assert [r.sequence for r in rest.items] == [3, 4, 5]
    assert first.items + rest.items == records


async def test_get_of_an_absent_record_is_not_found(trail: AuditTrail) -> None:
    await append_n(trail, "ceo", 1)
    with pytest.raises(NotFoundError, match="audit record 2 of chain 'ceo'") as raised:
        await trail.get("ceo", 2)
    assert raised.value.field == "sequence"
    with pytest.raises(InvalidInputError):
        await trail.get("ceo", 0)


# -- idempotency and concurrency -------------------------------------------------------------


async def test_the_same_key_twice_stores_one_record(trail: AuditTrail) -> None:
    first = await trail.append("ceo", "action", actor="a", key="k", data={"n": 1})
    again = await trail.append("ceo", "denial", actor="b", key="k", data={"n": 2})

    assert again == first
    assert [r.sequence for r in (await trail.list("ceo")).items] == [1]


# One trail: its appends to a chain take turns. One trail per append: like as many worker
# processes, they race, and the losers' transactions fail on the head's ETag and retry.
@pytest.mark.parametrize("workers", [1, 10])
async def test_concurrent_appends_give_a_gap_free_chain_with_each_key_once(
    clients: StorageClients, settings: Settings, trail: AuditTrail, workers: int
) -> None:
    trails = [AuditTrail(clients, settings) for _ in range(workers)]
    keys = [f"k{i % 6}" for i in range(10)]  # k0..k3 twice, k4 and k5 once
    results = await asyncio.gather(
        *(
            trails[i % workers].append(
                "ceo", "action", actor="agent:ceo", key=key, data={"attempt": i}
            )
            for i, key in enumerate(keys)
        )
    )

    stored = (await trail.list("ceo")).items
    assert [r.sequence for r in stored] == [1, 2, 3, 4, 5, 6]
    assert sorted(r.key for r in stored) == [f"k{i}" for i in range(6)]
    by_key = {r.key: r for r in stored}
    assert all(result == by_key[result.key] for result in results)
    verification = await trail.verify("ceo")
    assert verification.valid and verification.records == 6 and verification.head_sequence == 6


@pytest.mark.parametrize("workers", [1, 10])
async def test_concurrent_appends_with_distinct_keys_are_contiguous(
    clients: StorageClients, settings: Settings, trail: AuditTrail, workers: int
) -> None:
    trails = [AuditTrail(clients, settings) for _ in range(workers)]
    await asyncio.gather(
        *(
            trails[i % workers].append("ceo", "action", actor="a", key=f"k{i}", data={})
            for i in range(10)
        )
    )

    stored = (await trail.list("ceo")).items
    assert [r.sequence for r in stored] == list(range(1, 11))
    assert all(b.previous_hash == a.hash for a, b in itertools.pairwise(stored))
    assert (await trail.verify("ceo")).valid


# -- verify ----------------------------------------------------------------------------------


async def test_verify_a_sound_chain(trail: AuditTrail) -> None:
    await append_n(trail, "ceo", 5)

    verification = await trail.verify("ceo")

    assert verification.valid
    assert verification.records == 5
    assert verification.head_sequence == 5
    assert verification.broken is None


async def test_an_empty_chain_is_valid(trail: AuditTrail) -> None:
    verification = await trail.verify("ceo")
    assert verification.valid
    assert verification.records == 0
    assert verification.head_sequence is None


async def _edit_data(table: TableClient, trail: AuditTrail) -> None:
    entity = await table.get_entity("ceo", row(2))
    entity["data"] = json.dumps({"step": 2, "note": "nothing to see"})
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)


async def _edit_actor(table: TableClient, trail: AuditTrail) -> None:
    entity = await table.get_entity("ceo", row(2))
    entity["actor"] = "agent:someone-else"
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)


async def _delete_middle(table: TableClient, trail: AuditTrail) -> None:
    await table.delete_entity("ceo", row(2))


async def _delete_last(table: TableClient, trail: AuditTrail) -> None:
    await table.delete_entity("ceo", row(5))


async def _swap(table: TableClient, trail: AuditTrail) -> None:
    two, three = await table.get_entity("ceo", row(2)), await table.get_entity("ceo", row(3))
    await table.upsert_entity({**three, "RowKey": row(2)}, mode=UpdateMode.REPLACE)
    await table.upsert_entity({**two, "RowKey": row(3)}, mode=UpdateMode.REPLACE)


async def _edit_and_rehash(table: TableClient, trail: AuditTrail) -> None:
    original = await trail.get("ceo", 2)
    forged = original.model_copy(update={"data": {"step": 2, "note": "rewritten"}})
    entity = await table.get_entity("ceo", row(2))
    entity["data"] = json.dumps(forged.data)
    entity["hash"] = compute_hash(forged)
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)


async def _garble_data(table: TableClient, trail: AuditTrail) -> None:
    entity = await table.get_entity("ceo", row(2))
    entity["data"] = "{not json"
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)


async def _wrong_type(table: TableClient, trail: AuditTrail) -> None:
    entity = await table.get_entity("ceo", row(4))
    entity["sequence"] = "four"
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)


async def _drop_head(table: TableClient, trail: AuditTrail) -> None:
    await table.delete_entity("ceo", "head")


Tamper = Callable[[TableClient, AuditTrail], Awaitable[None]]


@pytest.mark.parametrize(
    ("tamper", "sequence", "reason", "sound"),
    [
        (_edit_data, 2, "record 2 was altered: its hash does not match its content", 1),
        (_edit_actor, 2, "record 2 was altered", 1),
        (_delete_middle, 2, "record 2 is missing", 1),
        (_delete_last, 5, "record 5 is missing (the head says the chain has 5 records)", 4),
        (_swap, 2, "record 2 is out of place: its row holds record 3", 1),
        (_edit_and_rehash, 3, "record 3 does not follow record 2", 2),
        (_garble_data, 2, "record 2 cannot be read: data is not JSON", 1),
        (_wrong_type, 4, "record 4 cannot be read: sequence", 3),
        # The records still link; it is the head that no longer counts them.
        (_drop_head, 1, "record 1 is not counted by the head (the head says the chain has 0", 5),
    ],
)
async def test_verify_finds_the_first_broken_link(
    trail: AuditTrail,
    table: TableClient,
    tamper: Tamper,
    sequence: int,
    reason: str,
    sound: int,
) -> None:
    await append_n(trail, "ceo", 5)
    await append_n(trail, "cfo", 2)
    await tamper(table, trail)

    verification = await trail.verify("ceo")

    assert not verification.valid
    assert verification.broken is not None
    assert verification.broken.sequence == sequence
    assert reason in verification.broken.reason
    assert verification.records == sound
    assert (await trail.verify("cfo")).valid


async def test_a_forged_first_record_must_start_from_zeros(
    trail: AuditTrail, table: TableClient
) -> None:
    await append_n(trail, "ceo", 2)
    original = await trail.get("ceo", 1)
    forged = original.model_copy(update={"previous_hash": "1" * 64})
    entity = await table.get_entity("ceo", row(1))
    entity.update(previous_hash=forged.previous_hash, hash=compute_hash(forged))
    await table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    broken = (await trail.verify("ceo")).broken
    assert broken is not None and broken.sequence == 1
    assert "does not start the chain" in broken.reason


async def test_reading_a_damaged_row_says_so(trail: AuditTrail, table: TableClient) -> None:
    await append_n(trail, "ceo", 3)
    await _garble_data(table, trail)

    with pytest.raises(AuditChainError, match="data is not JSON"):
        await trail.get("ceo", 2)
    with pytest.raises(AuditChainError):
        await trail.list("ceo")


async def test_appending_to_a_chain_whose_head_was_removed_is_refused(
    trail: AuditTrail, table: TableClient
) -> None:
    await append_n(trail, "ceo", 2)
    await _drop_head(table, trail)

    with pytest.raises(AuditChainError, match="run verify"):
        await trail.append("ceo", "action", actor="a", key="new", data={})


async def test_a_key_whose_record_was_removed_is_refused(
    trail: AuditTrail, table: TableClient
) -> None:
    await append_n(trail, "ceo", 3)
    await _delete_middle(table, trail)

    with pytest.raises(AuditChainError, match="ceo-2"):
        await trail.append("ceo", "action", actor="a", key="ceo-2", data={})


# -- chains and input ------------------------------------------------------------------------


async def test_chains_are_separate(trail: AuditTrail) -> None:
    a = await append_n(trail, "agent-a", 3)
    b = await trail.append("agent-b", "approval", actor="human:ops", key="agent-a-1", data={})

    assert b.sequence == 1 and b.previous_hash == GENESIS_HASH
    assert (await trail.list("agent-a")).items == a
    assert (await trail.list("agent-b")).items == [b]
    assert (await trail.verify("agent-a")).records == 3
    assert (await trail.verify("agent-b")).records == 1

    page = await trail.list("agent-a", page_size=1)
    assert page.continuation is not None
    with pytest.raises(InvalidInputError) as raised:
        await trail.list("agent-b", continuation=page.continuation)
    assert raised.value.field == "continuation"


async def test_the_governance_chain(trail: AuditTrail) -> None:
    record = await trail.append(
        GOVERNANCE_CHAIN, "admin", actor="human:ops", key="policy-1", data={"policy": "v2"}
    )
    assert record.chain == "_governance"
    assert (await trail.verify(GOVERNANCE_CHAIN)).valid


@pytest.mark.parametrize("chain", ["CEO", "_other", "", "a/b", "-a", "x" * 65, None])
async def test_bad_chain_ids_are_refused(trail: AuditTrail, chain: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        check_chain(chain)
    assert raised.value.field == "chain"
    for call in (
        trail.append(chain, "action", actor="a", key="k", data={}),
        trail.list(chain),
        trail.verify(chain),
        trail.get(chain, 1),
    ):
        with pytest.raises(InvalidInputError) as raised:
            await call
        assert raised.value.field == "chain"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"data": {"blob": "x" * MAX_DATA_CHARS}}, "data"),
        ({"data": {"blob": "\N{GRINNING FACE}" * (MAX_DATA_CHARS // 2)}}, "data"),
        ({"data": {"text": "\ud800"}}, "data"),
        ({"data": {"when": datetime(2026, 1, 1, tzinfo=UTC)}}, "data"),
        ({"data": {"ratio": float("nan")}}, "data"),
        ({"data": ["not", "an", "object"]}, "data"),
        ({"kind": "gossip"}, "kind"),
        ({"actor": ""}, "actor"),
        ({"key": ""}, "key"),
        ({"time": datetime(2026, 1, 1)}, "time"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(
    trail: AuditTrail, changes: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"kind": "action", "actor": "a", "key": "k", "data": {}}
    arguments.update(changes)
    kind = arguments.pop("kind")

    with pytest.raises(InvalidInputError) as raised:
        await trail.append("ceo", kind, **arguments)

    assert raised.value.field == field
    assert (await trail.list("ceo")).items == []
    verification = await trail.verify("ceo")
    assert verification.records == 0 and verification.head_sequence is None


async def test_data_up_to_the_limit_is_stored(trail: AuditTrail) -> None:
    wide = {"blob": "\N{GRINNING FACE}" * (MAX_DATA_CHARS // 2 - 10)}
    narrow = {"blob": "x" * (MAX_DATA_CHARS - 20)}
    first = await trail.append("ceo", "action", actor="a", key="wide", data=wide)
    second = await trail.append("ceo", "action", actor="a", key="narrow", data=narrow)

    assert (await trail.get("ceo", 1)).data == wide == first.data
    assert (await trail.get("ceo", 2)).data == narrow == second.data
    assert (await trail.verify("ceo")).valid


async def test_agent_store_has_the_audit_trail(clients: StorageClients, settings: Settings) -> None:
    from aos.storage.store import AgentStore

    store = AgentStore(clients, settings)
    record = await store.audit.append("ceo", "action", actor="a", key="k", data={})
    assert store.audit.table_name == f"{settings.storage_prefix}audit"
    assert await store.audit.get("ceo", 1) == record
