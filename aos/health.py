"""Health: can this app reach what it depends on? Used by the /api/health route."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel

from aos import __version__
from aos.errors import ConfigurationError
from aos.settings import Settings
from aos.storage.clients import StorageClients

CHECK_TIMEOUT_SECONDS = 5.0


class HealthReport(BaseModel):
    status: Literal["healthy", "unhealthy"]
    version: str = __version__
    checks: dict[str, str]


async def check_health(settings: Settings | None = None) -> HealthReport:
    """Probe storage with one cheap call; report each dependency as 'ok' or what is wrong."""
    checks: dict[str, str] = {}
    try:
        settings = settings or Settings.from_env()
        async with StorageClients.from_settings(settings) as clients:
            tables = clients.tables().list_tables(results_per_page=1).by_page()
            await asyncio.wait_for(anext(tables, None), CHECK_TIMEOUT_SECONDS)
        checks["storage"] = "ok"
    except ConfigurationError as exc:
        checks["storage"] = exc.message
    except TimeoutError:
        checks["storage"] = f"no answer within {CHECK_TIMEOUT_SECONDS:.0f}s"
    except Exception as exc:  # report, don't raise: health must always answer
        checks["storage"] = f"unreachable: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return HealthReport(status="healthy" if healthy else "unhealthy", checks=checks)
