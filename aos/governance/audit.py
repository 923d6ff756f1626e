"""The audit trail: an append-only, tamper-evident record of what agents decided and did.

One hash chain per agent (partition = chain id), plus `_governance` for shared policy changes.
Each record carries the hash of the one before it, so changing, removing or reordering a record
breaks the chain there and `verify` says where. Rows in a chain's partition:

- `r<sequence:012d>`: the records, from 1, in order;
- `k<sha256(key)[:40]>`: the sequence an idempotency key was recorded at, so a retried append
  returns the first record instead of adding a second;
- `head`: the last sequence and hash.

An append writes its record, its key row and the new head in one entity-group transaction that
holds only if the head is unchanged since it was read, so concurrent appenders can neither fork
the chain nor leave a gap: the loser reads again and retries.

Tamper-evident, not tamper-proof: whoever may write the table can rewrite a chain from the first
changed record on, hashes and head included. Keeping head hashes somewhere else is what catches
that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from aos.agents.models import check_slug, utcnow
from aos.errors import AuditChainError, ConcurrencyError, InvalidInputError
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.paging import MAX_PAGE_SIZE, Page, query_page
from aos.storage.tables import MAX_INLINE_CHARS, TableSet, storage_errors

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

GOVERNANCE_CHAIN = "_governance"
GENESIS_HASH = "0" * 64
MAX_DATA_CHARS = MAX_INLINE_CHARS
MAX_APPEND_ATTEMPTS = 16

_HEAD = "head"
_RECORDS = "PartitionKey eq @chain and RowKey ge 'r' and RowKey lt 's'"

AuditKind = Literal["decision", "action", "denial", "approval", "admin"]


def _chain_id(value: str) -> str:
    if value != GOVERNANCE_CHAIN:
        check_slug(value)
    return value


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError("must include a time zone offset, e.g. 2026-01-31T09:00:00Z")
    return value.astimezone(UTC)


def agent_actor(agent_id: str) -> str:
    """The actor of what an agent does itself (its decisions and actions)."""
    return f"agent:{agent_id}"


def check_chain(chain: str) -> str:
    """A chain id: an agent id, or `_governance` for changes that are nobody's in particular."""
    try:
        return _chain_id(chain)
    except (ValueError, TypeError):
        raise InvalidInputError(
            f"chain must be an agent id (a lowercase slug such as 'ceo') or "
            f"'{GOVERNANCE_CHAIN}', not {chain!r}",
            field="chain",
        ) from None


MAX_ACTOR_CHARS = 512  # also the most a correlation id may hold
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACTOR_CHARS)]


class AuditRecord(BaseModel):
    """One entry of a chain. `hash` covers every other field, `previous_hash` included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: Annotated[str, AfterValidator(_chain_id)]
    sequence: int = Field(ge=1)
    kind: AuditKind
    actor: Name
    correlation_id: Name | None = None
    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    time: Annotated[datetime, AfterValidator(_utc)]
    data: dict[str, Any] = Field(default_factory=dict)
    previous_hash: Hash
    hash: Hash


class BrokenLink(BaseModel):
    sequence: int
    reason: str


class ChainVerification(BaseModel):
    """What `verify` found. `records` counts the records checked and found sound (on a broken
    chain, those before the break)."""

    chain: str
    valid: bool
    records: int
    head_sequence: int | None = None
    broken: BrokenLink | None = None


def _canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def compute_hash(record: AuditRecord) -> str:
    """The hash a record must carry: sha256 of the canonical JSON of every field but `hash`.

    The fields are listed here rather than taken from pydantic's serializer, so that a library
    upgrade cannot change what an old record hashes to."""
    content = {
        "chain": record.chain,
        "sequence": record.sequence,
        "kind": record.kind,
        "actor": record.actor,
        "correlation_id": record.correlation_id,
        "key": record.key,
        "time": record.time.isoformat(),
        "data": record.data,
        "previous_hash": record.previous_hash,
    }
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def _row(sequence: int) -> str:
    return f"r{sequence:012d}"


def _key_row(key: str) -> str:
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _data_text(data: Any) -> str:
    if not isinstance(data, dict):
        raise InvalidInputError("data must be a JSON object", field="data")
    try:
        text = _canonical(data)
        text.encode()  # a lone surrogate cannot be stored (nor hashed)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"data must be plain JSON: {exc}", field="data") from None
    # Tables counts a string in UTF-16 units, so a character beyond the BMP counts twice.
    size = len(text.encode("utf-16-le")) // 2
    if size > MAX_DATA_CHARS:
        raise InvalidInputError(
            f"data is {size} characters as JSON, over the {MAX_DATA_CHARS}-character limit: "
            "record a summary and keep the full body elsewhere (e.g. the context store)",
            field="data",
        )
    return text


def _problem(exc: Exception) -> str:
    """A one-line account of why a stored row could not be read."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
    if isinstance(exc, json.JSONDecodeError):
        return "data is not JSON"
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r}"
    return str(exc)


def _record(entity: dict[str, Any]) -> AuditRecord:
    """A record row as a model. Raises KeyError, TypeError or ValueError if it is malformed."""
    return AuditRecord(
        chain=entity["PartitionKey"],
        sequence=entity["sequence"],
        kind=entity["kind"],
        actor=entity["actor"],
        correlation_id=entity.get("correlation_id"),
        key=entity["key"],
        time=entity["time"],
        data=json.loads(entity["data"]),
        previous_hash=entity["previous_hash"],
        hash=entity["hash"],
    )


@dataclass(frozen=True)
class _Head:
    sequence: int
    hash: str
    etag: str


def _plural(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


class AuditTrail:
    """Append-only audit chains in the `{prefix}audit` table, one partition per chain."""

    def __init__(self, clients: StorageClients, settings: Settings) -> None:
        self._tables = TableSet(clients.tables())
        self.table_name = f"{settings.storage_prefix}audit"
        # Appends to one chain from this process wait their turn rather than race: only other
        # processes' appends cost a retry.
        self._chain_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # The head each chain had after this process's last append to it. One agent's records
        # come from one turn at a time, so it is usually still the head: the append is then one
        # transaction, and a stale one costs a conflict and a re-read.
        self._heads: dict[str, _Head] = {}

    async def append(
        self,
        chain: str,
        kind: AuditKind,
        *,
        actor: str,
        key: str,
        data: dict[str, Any],
        correlation_id: str | None = None,
        time: datetime | None = None,
    ) -> AuditRecord:
        """Add a record to the end of a chain. `key` makes it idempotent: if a record with that
        key is already in the chain, that record is returned as stored and nothing is added."""
        check_chain(chain)
        text = _data_text(data)
        try:
            draft = AuditRecord(
                chain=chain,
                sequence=1,
                kind=kind,
                actor=actor,
                correlation_id=correlation_id,
                key=key,
                time=utcnow() if time is None else time,
                data=json.loads(text),
                previous_hash=GENESIS_HASH,
                hash=GENESIS_HASH,
            )
            compute_hash(draft)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise InvalidInputError(
                f"{error['loc'][0]}: {error['msg']}", field=str(error["loc"][0])
            ) from None
        except ValueError as exc:  # a string that is not valid Unicode (a lone surrogate)
            raise InvalidInputError(f"the record is not valid text: {exc}") from None

        table = await self._tables.get(self.table_name)
        async with self._chain_locks.setdefault(chain, asyncio.Lock()):
            return await self._commit(table, draft, text)

    async def _commit(self, table: TableClient, draft: AuditRecord, text: str) -> AuditRecord:
        """Write `draft` as the next record of its chain, or find the one stored under its key."""
        from azure.core.exceptions import HttpResponseError

        chain, key = draft.chain, draft.key
        head = self._heads.get(chain) or await self._head(table, chain)
        for attempt in range(MAX_APPEND_ATTEMPTS):
            record = draft.model_copy(
                update={
                    "sequence": head.sequence + 1 if head else 1,
                    "previous_hash": head.hash if head else GENESIS_HASH,
                }
            )
            record = record.model_copy(update={"hash": compute_hash(record)})
            try:
                results = await table.submit_transaction(
                    self._append_operations(record, text, head)
                )
            except HttpResponseError as exc:
                stale_head = exc.status_code == 404 and head is not None  # its row is gone
                if exc.status_code not in (409, 412) and not stale_head:
                    raise
            else:
                self._heads[chain] = _Head(record.sequence, record.hash, results[-1]["etag"])
                return record
            # The key is recorded already (a retry), or the head moved (another writer, or a
            # stale cached head): find the record, or read the head again and retry.
            self._heads.pop(chain, None)
            existing = await self._by_key(table, chain, key)
            if existing is not None:
                return existing
            latest = await self._head(table, chain)
            if _etag(latest) == _etag(head):
                # Every append moves the head, so a conflict that left it alone was no race:
                # a row the head does not count is in the way.
                raise AuditChainError(
                    f"audit chain '{chain}' is damaged: row {record.sequence} exists but the "
                    f"head says the chain has {_plural(record.sequence - 1)}; run verify",
                    field="chain",
                )
            head = latest
            # Back off (exponentially, with jitter) so that a crowd of appenders spreads out.
            await asyncio.sleep(random.uniform(0, min(1.0, 0.005 * 2**attempt)))
        raise ConcurrencyError(
            f"could not append to audit chain '{chain}' in {MAX_APPEND_ATTEMPTS} attempts: "
            "too many concurrent writers; try again",
            field="chain",
        )

    async def get(self, chain: str, sequence: int) -> AuditRecord:
        check_chain(chain)
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
            raise InvalidInputError(
                f"sequence must be a whole number from 1, not {sequence!r}", field="sequence"
            )
        table = await self._tables.get(self.table_name)
        with storage_errors(f"audit record {sequence} of chain '{chain}'", field="sequence"):
            entity = await table.get_entity(chain, _row(sequence))
        return self._readable(entity)

    async def list(
        self, chain: str, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[AuditRecord]:
        """A chain's records, oldest first, a page at a time."""
        check_chain(chain)
        table = await self._tables.get(self.table_name)
        entities, token = await query_page(
            table,
            scope=f"audit:{chain}",
            query_filter=_RECORDS,
            parameters={"chain": chain},
            page_size=page_size,
            continuation=continuation,
        )
        return Page(items=[self._readable(e) for e in entities], continuation=token)

    async def verify(self, chain: str) -> ChainVerification:
        """Check a chain from its first record to its head and report the first broken link."""
        check_chain(chain)
        table = await self._tables.get(self.table_name)
        head: _Head | None = None
        head_problem: str | None = None
        try:
            head = await self._head(table, chain)
        except AuditChainError as exc:
            head_problem = exc.message

        checked, previous, broken = 0, None, None
        # Read a page at a time, so a long chain is never all in memory.
        entities = table.query_entities(
            _RECORDS, parameters={"chain": chain}, results_per_page=MAX_PAGE_SIZE
        )
        async for entity in entities:
            outcome = _check(entity, previous)
            if isinstance(outcome, BrokenLink):
                broken = outcome
                break
            checked, previous = checked + 1, outcome

        last = previous.sequence if previous else 0
        if broken is None and head_problem is not None:
            broken = BrokenLink(sequence=last + 1, reason=head_problem)
        elif broken is None:
            if last > (head.sequence if head else 0):
                # The head was read first, so records after it may be appends made since.
                head = await self._head(table, chain)
            broken = _check_head(head, previous)
        return ChainVerification(
            chain=chain,
            valid=broken is None,
            records=checked,
            head_sequence=head.sequence if head else None,
            broken=broken,
        )

    # -- rows ------------------------------------------------------------------------------

    @staticmethod
    def _append_operations(
        record: AuditRecord, text: str, head: _Head | None
    ) -> list[tuple[Any, ...]]:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        chain = record.chain
        row = {
            "PartitionKey": chain,
            "RowKey": _row(record.sequence),
            "sequence": record.sequence,
            "kind": record.kind,
            "actor": record.actor,
            "key": record.key,
            "time": record.time,
            "data": text,
            "previous_hash": record.previous_hash,
            "hash": record.hash,
        }
        if record.correlation_id is not None:
            row["correlation_id"] = record.correlation_id
        key_row = {
            "PartitionKey": chain,
            "RowKey": _key_row(record.key),
            "key": record.key,
            "sequence": record.sequence,
        }
        new_head = {
            "PartitionKey": chain,
            "RowKey": _HEAD,
            "sequence": record.sequence,
            "hash": record.hash,
        }
        head_operation: tuple[Any, ...] = (
            ("create", new_head)
            if head is None
            else (
                "update",
                new_head,
                {
                    "mode": UpdateMode.REPLACE,
                    "etag": head.etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
        )
        return [("create", row), ("create", key_row), head_operation]

    @staticmethod
    async def _head(table: TableClient, chain: str) -> _Head | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await table.get_entity(chain, _HEAD)
        except ResourceNotFoundError:
            return None
        sequence, hash_ = entity.get("sequence"), entity.get("hash")
        if (
            isinstance(sequence, bool)
            or not isinstance(sequence, int)
            or sequence < 1
            or not isinstance(hash_, str)
            or len(hash_) != 64
        ):
            raise AuditChainError(
                f"the head row of audit chain '{chain}' cannot be read", field="chain"
            )
        return _Head(sequence=sequence, hash=hash_, etag=entity.metadata["etag"])

    async def _by_key(self, table: TableClient, chain: str, key: str) -> AuditRecord | None:
        """The record already appended with this idempotency key, if there is one."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            index = await table.get_entity(chain, _key_row(key))
        except ResourceNotFoundError:
            return None
        sequence, record = index.get("sequence"), None
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            with contextlib.suppress(ResourceNotFoundError):
                record = self._readable(await table.get_entity(chain, _row(sequence)))
        if record is None or record.key != key:
            raise AuditChainError(
                f"audit chain '{chain}' is damaged: key {key!r} was recorded as record "
                f"{sequence}, which is missing or holds another key; run verify",
                field="chain",
            )
        return record

    @staticmethod
    def _readable(entity: dict[str, Any]) -> AuditRecord:
        try:
            return _record(entity)
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditChainError(
                f"row {entity.get('RowKey')!r} of audit chain '{entity.get('PartitionKey')}' "
                f"cannot be read ({_problem(exc)}); run verify",
                field="chain",
            ) from None


def _etag(head: _Head | None) -> str | None:
    return head.etag if head else None


def _check(entity: dict[str, Any], previous: AuditRecord | None) -> AuditRecord | BrokenLink:
    """The record in a row if it follows `previous` soundly, else the link that breaks."""
    expected = previous.sequence + 1 if previous else 1
    row = entity["RowKey"]
    digits = row[1:]
    at = int(digits) if len(digits) == 12 and digits.isdigit() else 0
    if at > expected:
        return BrokenLink(sequence=expected, reason=f"record {expected} is missing")
    if at < expected:
        return BrokenLink(sequence=expected, reason=f"row {row!r} is not an audit record")
    try:
        record = _record(entity)
        computed = compute_hash(record)
    except (KeyError, TypeError, ValueError) as exc:
        return BrokenLink(sequence=at, reason=f"record {at} cannot be read: {_problem(exc)}")
    if record.sequence != at:
        return BrokenLink(
            sequence=at,
            reason=f"record {at} is out of place: its row holds record {record.sequence}",
        )
    if computed != record.hash:
        return BrokenLink(
            sequence=at, reason=f"record {at} was altered: its hash does not match its content"
        )
    if record.previous_hash != (previous.hash if previous else GENESIS_HASH):
        reason = (
            f"record {at} does not follow record {at - 1}"
            if previous
            else "record 1 does not start the chain: its previous hash is not all zeros"
        )
        return BrokenLink(sequence=at, reason=reason)
    return record


def _check_head(head: _Head | None, last: AuditRecord | None) -> BrokenLink | None:
    """Whether the head agrees with the last record: catches records removed from the end."""
    counted = head.sequence if head else 0
    found = last.sequence if last else 0
    if found < counted:
        return BrokenLink(
            sequence=found + 1,
            reason=f"record {found + 1} is missing (the head says the chain has "
            f"{_plural(counted)})",
        )
    if found > counted:
        return BrokenLink(
            sequence=counted + 1,
            reason=f"record {counted + 1} is not counted by the head (the head says the chain "
            f"has {_plural(counted)})",
        )
    if head is not None and last is not None and head.hash != last.hash:
        return BrokenLink(sequence=found, reason=f"record {found} is not the one the head records")
    return None
