"""End-to-end fixtures: the local host (`python -m aos.devhost`) as a real subprocess on Azurite.

`start_host(app_dir)` starts the host on a free port with settings built from the test's
`settings` (Azurite, a unique AOS_STORAGE_PREFIX), fixed keys and no Service Bus namespace, waits
until it serves, and returns a `Host` that talks HTTP to it and can `kill()` (SIGKILL) and
`restart()` it over the same storage. The host's output goes to a log file, printed when a test
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from aos.devhost.azurite import free_ports
from aos.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = Path(__file__).resolve().parent / "sample_app"
FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"
TASK_HUB = "e2ehub"
STARTUP_TIMEOUT = 60.0
READY_LINE = "Host started:"
# Settings the host reads, inherited from a developer's shell or CI, that must not leak in.
_INHERITED = ("AzureWebJobs", "AOS_", "ServiceBus", "FUNCTIONS_")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request; any status is an answer (no exception for 4xx/5xx)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and not request.has_header("Content-type"):  # urllib's spelling
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, payload, answer_headers = error.code, error.read(), error.headers
    text = payload.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return Reply(status, parsed, dict(answer_headers.items()), text)


def wait_for(
    probe: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.1,
    on_timeout: Callable[[], None] | None = None,
) -> Any:
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout` s
    (first calling `on_timeout`, which may end the test its own way)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            if on_timeout is not None:
                on_timeout()
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def poll(probe: Callable[[], Any], seconds: float, interval: float = 0.1) -> Any:
    """`probe`'s first truthy answer within `seconds`, else its last answer."""
    deadline = time.monotonic() + seconds
    while not (last := probe()) and time.monotonic() < deadline:
        time.sleep(interval)
    return last


def wait_for_instance(
    host: Host, instance_id: str, probe: Callable[[], Any], what: str, timeout: float = 30.0
) -> Any:
    """`wait_for` on an orchestration instance's status that, should it take long, says
    whether the host answers from a stale cache of the instance (storage is ahead): the Table
    store race test_known_host_bugs.py pins down. Checked after 10 s and at the timeout."""

    def stale_cache() -> None:
        served = host.request("GET", host.status_path(instance_id), key=None).body or {}
        stored = host.stored_instance(instance_id) or {}
        fields = ("runtimeStatus", "customStatus", "output")
        if any(served.get(f) != stored.get(f) for f in fields):
            pytest.fail(
                f"waiting for {what}: the host serves a stale instance {instance_id} (served "
                f"{[served.get(f) for f in fields]}, storage holds "
                f"{[stored.get(f) for f in fields]}): the Table store's cache race is back"
            )

    found = poll(probe, min(10.0, timeout))
    if found:
        return found
    stale_cache()
    return wait_for(probe, what, max(timeout - 10.0, 0.0), on_timeout=stale_cache)


@dataclass
class Host:
    """A `python -m aos.devhost` process over one storage (prefix), restartable."""

    app_dir: Path
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Host:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start {self.starts}: port {self.port} =====\n".encode())
        self._log.flush()
        self._ready_from = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aos.devhost",
                "--app-dir",
                str(self.app_dir),
                "--port",
                str(self.port),
            ],
            cwd=self.app_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(
                    f"the host exited with {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            with self.log_path.open("rb") as log:
                log.seek(self._ready_from)
                started = READY_LINE.encode() in log.read()
            if started:
                with contextlib.suppress(OSError):
                    # Any answer means it serves; the sample app has no /api/health.
                    http("GET", self.url + "/api/health", timeout=5)
                    return
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"the host did not start within {STARTUP_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self._close_log()

    def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C: the host shuts down cleanly (SIGKILL if it does not in time).
        Returns the exit code."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.process.returncode if self.process is not None else None

    def restart(self, *, kill: bool = True) -> Host:
        """Stop it (SIGKILL unless `kill` is false) and start it again over the same storage."""
        self.kill() if kill else self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def task_hub(self) -> str:
        """The task hub the host reported at start ("Task hub: NAME; storage: ...")."""
        found = re.search(r"^Task hub: ([^;]+);", self.log_text(), re.MULTILINE)
        assert found, "the host did not report its task hub"
        return found.group(1)

    def status_path(self, instance_id: str) -> str:
        return f"/runtime/webhooks/durabletask/instances/{quote(instance_id, safe='')}"

    def stored_instance(self, instance_id: str) -> dict[str, Any] | None:
        """An instance's status as storage holds it, read past the host (for diagnosis)."""
        from aos.devhost.durable.table_store import TableDurableStore
        from aos.storage.clients import StorageClients

        settings = Settings.from_env(self.env)

        async def read() -> dict[str, Any] | None:
            async with StorageClients.from_settings(settings) as clients:
                store = TableDurableStore(clients, settings, self.task_hub)
                record = await store.get_instance(instance_id)
            if record is None:
                return None
            return {
                "runtimeStatus": record.status.name,
                "customStatus": _token(record.custom_status),
                "output": _token(record.output),
            }

        return asyncio.run(read())

    # -- HTTP -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = FUNCTION_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """A request to a path on the host (or a full URL), with a key in x-functions-key."""
        url = path if path.startswith("http") else self.url + path
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["x-functions-key"] = key
        return http(method, url, body, headers=all_headers, raw=raw)

    def send_events(self, topic: str, events: Any, *, key: str | None = MASTER_KEY) -> Reply:
        """POST /devhost/topics/{topic}/messages: put CloudEvents on the local broker's topic."""
        return self.request("POST", f"/devhost/topics/{topic}/messages", events, key=key)


def _token(text: str | None) -> Any:
    """Stored JSON text as the status API shows it: parsed, or the raw text if not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def host_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The host's environment: this process's, without inherited host settings, plus the test's
    storage, fixed keys and AOS's settings (so no local.settings.json is needed, and the values
    here win over one that exists: the environment comes first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED)}
    env.update(
        {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": settings.get("AzureWebJobsStorage") or "",
            "AOS_STORAGE_CONNECTION": "AzureWebJobsStorage",
            "AOS_STORAGE_PREFIX": settings.storage_prefix,
            "AOS_TASK_HUB": TASK_HUB,
            "AOS_DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
            "AOS_DEVHOST_MASTER_KEY": MASTER_KEY,
            # Set but empty: no namespace, so Service Bus triggers use the local broker (and an
            # app folder's local.settings.json cannot fill it in, since the environment wins).
            "ServiceBusConnection": "",
            "AOS_SERVICE_BUS_CONNECTION": "ServiceBusConnection",
            "AOS_EVENTS_TOPIC": "aos-events",
            "AOS_MESSAGES_TOPIC": "aos-agent-messages",
            "AOS_SUBSCRIPTION": "aos",
            # No inference endpoint, whatever a local.settings.json says: decisions use the
            # deterministic scorer, so the tests know what each agent chooses.
            "AOS_INFERENCE_ENDPOINT": "",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def start_host(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Host]]:
    """Start hosts for this test (all over the test's storage); each is stopped at the end."""
    hosts: list[Host] = []

    def start(app_dir: Path = SAMPLE_APP, **extra_env: str) -> Host:
        (port,) = free_ports(1)
        host = Host(
            app_dir=app_dir,
            env=host_environment(settings, **extra_env),
            log_path=tmp_path / f"host-{len(hosts) + 1}.log",
            port=port,
        )
        hosts.append(host)
        return host.start()

    yield start
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    for host in hosts:
        host.stop()
        if failed:
            print(f"\n----- {host.log_path} (last lines) -----\n{host.log_tail(200)}")


@pytest.fixture
def sample_host(start_host: Callable[..., Host]) -> Host:
    """The documented Durable Functions sample app, run unmodified."""
    return start_host(SAMPLE_APP)


@pytest.fixture
def aos_host(start_host: Callable[..., Host]) -> Host:
    """AOS itself: the repository's function_app.py."""
    return start_host(REPO)
