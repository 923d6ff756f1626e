"""The inference benchmark runs end to end (its timings are not tested)."""

from __future__ import annotations

from aos.inference.bench import bench
from aos.settings import Settings
from aos.storage.clients import StorageClients
from tests.inference.fakeserver import FakeLorax


async def test_bench_reports_overhead_and_cache_hits(
    lorax: FakeLorax, settings: Settings, clients: StorageClients
):
    lines: list[str] = []
    results = await bench(
        lorax.url,
        calls=3,
        clients=clients,
        storage_prefix=settings.storage_prefix,
        out=lines.append,
    )
    assert {"raw_mean_ms", "client_mean_ms", "overhead_mean_ms", "cache_hit_mean_ms"} <= set(
        results
    )
    assert len(lines) == 2 and "overhead" in lines[0] and "cache hit" in lines[1]
    # 4 raw + 4 through the client + 1 to fill the cache; the hits never reach the server.
    assert len(lorax.requests) == 9


async def test_bench_openai_without_storage(lorax: FakeLorax):
    lines: list[str] = []
    results = await bench(lorax.url, api="openai", calls=2, out=lines.append)
    assert "cache_hit_mean_ms" not in results and len(lines) == 1
    assert all(r.path == "/v1/chat/completions" for r in lorax.requests)
