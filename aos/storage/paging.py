"""Paged listings with opaque continuation tokens, shared by every repository."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from aos.errors import InvalidInputError

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

T = TypeVar("T")

MAX_PAGE_SIZE = 100


class Page(BaseModel, Generic[T]):
    """One page of a listing. Pass `continuation` back to get the next; None means the end."""

    items: list[T]
    continuation: str | None = None


def check_page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}", field="page_size"
        )
    return page_size


def _encode(scope: str, token: Any) -> str | None:
    if not token:
        return None
    raw = json.dumps({"s": scope, "t": token}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(scope: str, continuation: str | None) -> Any:
    if not continuation:
        return None
    try:
        padded = continuation + "=" * (-len(continuation) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if payload["s"] == scope:
            return payload["t"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise InvalidInputError(
        "continuation is not a token returned by this listing; start again without one",
        field="continuation",
    )


async def query_page(
    table: TableClient,
    *,
    scope: str,
    query_filter: str,
    parameters: dict[str, Any],
    page_size: int,
    continuation: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entities matching a filter. `scope` ties tokens to the listing that made them."""
    pages = table.query_entities(
        query_filter, parameters=parameters, results_per_page=check_page_size(page_size)
    ).by_page(continuation_token=_decode(scope, continuation))
    async for page in pages:
        entities = [entity async for entity in page]
        return entities, _encode(scope, pages.continuation_token)
    return [], None
