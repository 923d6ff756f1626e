"""Inference micro-benchmark: client overhead per call, and the latency of a cache hit.

`await bench("http://127.0.0.1:8080")` sends the same small deterministic request through a bare
aiohttp session and through InferenceClient (cache off), and prints both latencies and their
difference — the client's own overhead (body building, retry/breaker bookkeeping, parsing).
Given StorageClients it also times answers served from the Table-storage cache.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from aos.inference.cache import ResponseCache
from aos.inference.client import ChatMessage, InferenceClient
from aos.inference.config import InferenceConfig
from aos.settings import Settings
from aos.storage.clients import StorageClients

_MESSAGES = [
    ChatMessage(role="system", content="Answer with one word."),
    ChatMessage(role="user", content="Is the sky blue?"),
]


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_ms": statistics.fmean(ordered) * 1000,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
    }


async def bench(
    url: str,
    *,
    api: str = "lorax",
    calls: int = 100,
    clients: StorageClients | None = None,
    storage_prefix: str = "aosbench",
    out: Callable[[str], Any] = print,
) -> dict[str, float]:
    """Time `calls` requests each way against the endpoint at `url`; print and return the figures
    (milliseconds). No key is sent: point it at a local or test endpoint."""
    import aiohttp

    config = InferenceConfig.from_settings(
        Settings.from_env({"AOS_INFERENCE_ENDPOINT": url, "AOS_INFERENCE_API": api})
    )
    results: dict[str, float] = {}
    async with InferenceClient(config) as client:
        body = client.build_body(_MESSAGES, client.select_adapter(None), config.parameters)
        payload = json.dumps(body).encode()
        raw: list[float] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(calls + 1):
                started = time.perf_counter()
                async with session.post(
                    config.route, data=payload, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                raw.append(time.perf_counter() - started)
        wrapped: list[float] = []
        for _ in range(calls + 1):
            started = time.perf_counter()
            await client.generate(_MESSAGES)
            wrapped.append(time.perf_counter() - started)
        raw_stats, client_stats = _summary(raw[1:]), _summary(wrapped[1:])  # skip warm-up
        results.update({f"raw_{k}": v for k, v in raw_stats.items()})
        results.update({f"client_{k}": v for k, v in client_stats.items()})
        results["overhead_mean_ms"] = client_stats["mean_ms"] - raw_stats["mean_ms"]
        out(
            f"inference {api} {config.route}: raw {raw_stats['mean_ms']:.2f} ms, "
            f"client {client_stats['mean_ms']:.2f} ms (p95 {client_stats['p95_ms']:.2f}), "
            f"overhead {results['overhead_mean_ms']:.2f} ms/call over {calls} calls"
        )

        if clients is not None:
            cache = ResponseCache(clients, storage_prefix, 300)
            await client.generate(_MESSAGES, cache=cache)  # fill
            hits: list[float] = []
            for _ in range(calls):
                started = time.perf_counter()
                result = await client.generate(_MESSAGES, cache=cache)
                hits.append(time.perf_counter() - started)
                if not result.cached:
                    out("inference cache: an answer was not served from the cache")
            hit_stats = _summary(hits)
            results.update({f"cache_hit_{k}": v for k, v in hit_stats.items()})
            out(
                f"inference cache hit: {hit_stats['mean_ms']:.2f} ms mean, "
                f"p95 {hit_stats['p95_ms']:.2f} ms over {calls} hits"
            )
    return results
