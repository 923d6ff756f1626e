"""Response cache for deterministic requests (temperature 0, LoRAX ``do_sample: false``).

The same deterministic request to the same endpoint gets the same answer, so a retried turn, a
replayed orchestration or many agents asking the same question pay for one model call. Entries
live in the Table ``<prefix>inferencecache``, keyed by a SHA-256 of (API style, endpoint route,
request body) — the body holds the adapter, the messages or prompt and every parameter. Answers
too large for a Table property go to a blob in ``<prefix>-inference`` (written first, removed
again if the row write fails, as the context store does). Entries older than
AOS_INFERENCE_CACHE_TTL_SECONDS are misses; `purge_expired` removes them.

The cache never fails a call: a storage error is logged and treated as a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aos.agents.models import utcnow
from aos.inference.config import InferenceConfig
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.tables import MAX_INLINE_CHARS

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient

logger = logging.getLogger(__name__)

CACHE_VERSION = 1

# Tables and containers known to exist, per storage account endpoint (create once per process).
_ready: set[tuple[str, str]] = set()
_locks: dict[tuple[str, str], asyncio.Lock] = {}


class CachedResponse(BaseModel):
    text: str
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    created_at: datetime
    expires_at: datetime


class ResponseCache:
    """Deterministic answers in Table storage (large ones in a blob), with a time to live."""

    def __init__(
        self,
        clients: StorageClients,
        storage_prefix: str,
        ttl_seconds: float,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("a cache needs a positive TTL; a TTL of 0 means no cache")
        self._clients = clients
        self.table_name = f"{storage_prefix}inferencecache"
        self.container_name = f"{storage_prefix}-inference"
        self.ttl = timedelta(seconds=ttl_seconds)
        self._now = now

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clients: StorageClients,
        config: InferenceConfig | None = None,
        **options: Any,
    ) -> ResponseCache | None:
        """The cache the settings ask for; None when AOS_INFERENCE_CACHE_TTL_SECONDS is 0."""
        config = config or InferenceConfig.from_settings(settings)
        if config.cache_ttl_seconds <= 0:
            return None
        return cls(clients, settings.storage_prefix, config.cache_ttl_seconds, **options)

    @staticmethod
    def key(api: str, endpoint: str, body: dict[str, Any]) -> str:
        """The cache key of a request: a hash of everything that determines its answer."""
        canonical = json.dumps(
            {"v": CACHE_VERSION, "api": api, "endpoint": endpoint, "body": body},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    async def get(self, key: str) -> CachedResponse | None:
        """The cached answer, or None on a miss (absent, expired or unreadable)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            table = await self._table()
            try:
                entity = await table.get_entity(key[:2], key)
            except ResourceNotFoundError:
                return None
            expires_at = entity["expires_at"]
            if expires_at <= self._now():
                logger.debug("inference cache: entry %s expired at %s", key[:12], expires_at)
                return None
            text = await self._load_text(entity)
            if text is None:
                return None
            return CachedResponse(
                text=text,
                model=entity.get("model"),
                prompt_tokens=entity.get("prompt_tokens", 0),
                completion_tokens=entity.get("completion_tokens", 0),
                finish_reason=entity.get("finish_reason"),
                created_at=entity["created_at"],
                expires_at=expires_at,
            )
        except Exception as exc:
            logger.warning("inference cache: read failed (%s); treating as a miss", _brief(exc))
            return None

    async def put(
        self,
        key: str,
        text: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        finish_reason: str | None = None,
        model: str | None = None,
    ) -> bool:
        """Store an answer; False (logged) if storage refused it."""
        from azure.data.tables import UpdateMode

        now = self._now()
        entity: dict[str, Any] = {
            "PartitionKey": key[:2],
            "RowKey": key,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "created_at": now,
            "expires_at": now + self.ttl,
        }
        if model is not None:
            entity["model"] = model
        if finish_reason is not None:
            entity["finish_reason"] = finish_reason
        blob_name = None
        try:
            if len(text) <= MAX_INLINE_CHARS:
                entity["text"] = text
            else:
                blob_name = f"{key}.txt"
                container = await self._container()
                await container.upload_blob(blob_name, text.encode(), overwrite=True)
                entity["text_blob"] = blob_name
            table = await self._table()
            await table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            return True
        except Exception as exc:
            logger.warning("inference cache: write failed (%s); answer not cached", _brief(exc))
            if blob_name is not None:
                await self._discard(blob_name)
            return False

    async def purge_expired(self) -> int:
        """Delete expired entries (and their blobs). Returns how many went."""
        table = await self._table()
        removed = 0
        entities = table.query_entities(
            "expires_at le @now", parameters={"now": self._now()}, select=None
        )
        async for entity in entities:
            await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            if entity.get("text_blob"):
                await self._discard(entity["text_blob"])
            removed += 1
        return removed

    # -- internals -------------------------------------------------------------------------

    async def _table(self) -> TableClient:
        service = self._clients.tables()
        marker = (service.url, self.table_name)
        if marker not in _ready:
            async with _locks.setdefault(marker, asyncio.Lock()):
                if marker not in _ready:
                    await service.create_table_if_not_exists(self.table_name)
                    _ready.add(marker)
        return service.get_table_client(self.table_name)

    async def _container(self) -> ContainerClient:
        from azure.core.exceptions import ResourceExistsError

        service = self._clients.blobs()
        container = service.get_container_client(self.container_name)
        marker = (service.url, self.container_name)
        if marker not in _ready:
            async with _locks.setdefault(marker, asyncio.Lock()):
                if marker not in _ready:
                    with contextlib.suppress(ResourceExistsError):
                        await container.create_container()
                    _ready.add(marker)
        return container

    async def _load_text(self, entity: dict[str, Any]) -> str | None:
        if "text" in entity:
            return entity["text"]
        if not entity.get("text_blob"):
            return None
        from azure.core.exceptions import ResourceNotFoundError

        container = await self._container()
        try:
            download = await container.download_blob(entity["text_blob"])
            return (await download.readall()).decode()
        except ResourceNotFoundError:
            return None

    async def _discard(self, blob_name: str) -> None:
        with contextlib.suppress(Exception):
            container = await self._container()
            await container.delete_blob(blob_name)


def _brief(exc: BaseException) -> str:
    """An exception's type and first line: enough to act on, never a connection string."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
