"""Table helpers shared by the repositories: create-once tables and error translation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aos.errors import AlreadyExistsError, ConcurrencyError, NotFoundError

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient, TableServiceClient

# A Table string property holds at most 64 KiB of UTF-16, i.e. 32K characters; binary 64 KiB.
MAX_INLINE_CHARS = 30_000
CHUNK_BYTES = 60_000


class TableSet:
    """Table clients by name, each table created on first use (once per process)."""

    def __init__(self, service: TableServiceClient) -> None:
        self._service = service
        self._ready: dict[str, asyncio.Lock] = {}
        self._created: set[str] = set()

    async def get(self, name: str) -> TableClient:
        if name not in self._created:
            lock = self._ready.setdefault(name, asyncio.Lock())
            async with lock:
                if name not in self._created:
                    await self._service.create_table_if_not_exists(name)
                    self._created.add(name)
        return self._service.get_table_client(name)


@contextmanager
def storage_errors(what: str, field: str | None = None) -> Iterator[None]:
    """Turn SDK errors into AOS errors that say which record, not which HTTP status."""
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )

    try:
        yield
    except ResourceNotFoundError:
        raise NotFoundError(f"{what} does not exist", field=field) from None
    except ResourceExistsError:
        raise AlreadyExistsError(f"{what} already exists", field=field) from None
    except ResourceModifiedError:
        raise ConcurrencyError(
            f"{what} was changed by someone else since it was read; read it again and retry",
            field=field,
        ) from None
    except HttpResponseError as exc:
        if exc.status_code == 412:
            raise ConcurrencyError(
                f"{what} was changed by someone else since it was read; read it again and retry",
                field=field,
            ) from None
        raise


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def split_bytes(data: bytes, prefix: str) -> dict[str, Any]:
    """Spread a body over binary properties `<prefix>_0..n` (each under the 64 KiB limit)."""
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    props: dict[str, Any] = {f"{prefix}_chunks": len(chunks)}
    props.update({f"{prefix}_{i}": chunk for i, chunk in enumerate(chunks)})
    return props


def join_bytes(entity: dict[str, Any], prefix: str) -> bytes:
    return b"".join(bytes(entity[f"{prefix}_{i}"]) for i in range(entity[f"{prefix}_chunks"]))
