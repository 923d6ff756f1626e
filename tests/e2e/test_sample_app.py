"""The documented Durable Functions patterns, run unmodified by `python -m aos.devhost`.

Everything goes over HTTP to the host subprocess, the way a user (or `curl`) talks to `func
start`: the app's routes under /api with function keys, and the Durable HTTP API through the
URLs that `create_check_status_response` hands out.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .conftest import FUNCTION_KEY, MASTER_KEY, Host, Reply, wait_for, wait_for_instance

FINISHED = {"Completed", "Failed", "Terminated", "Canceled"}


def start(host: Host, orchestrator: str, body: Any = None) -> dict[str, Any]:
    reply = host.request("POST", f"/api/orchestrators/{orchestrator}", body)
    assert reply.status == 202, reply.text
    assert reply.headers["Location"] == reply.body["statusQueryGetUri"]
    return reply.body


def finished(host: Host, check_status: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Poll the statusQueryGetUri until the instance finishes; its status document."""

    def status() -> dict[str, Any] | None:
        reply = host.request("GET", check_status["statusQueryGetUri"], key=None)
        assert reply.status in (200, 202), reply.text
        return reply.body if reply.body["runtimeStatus"] in FINISHED else None

    return wait_for_instance(
        host, check_status["id"], status, f"instance {check_status['id']} to finish", timeout
    )


def test_function_chaining(sample_host: Host) -> None:
    check_status = start(sample_host, "hello_orchestrator")
    # The management URLs point at this host, as `func start`'s point at localhost:7071.
    status_uri = urlsplit(check_status["statusQueryGetUri"])
    assert f"{status_uri.scheme}://{status_uri.netloc}" == sample_host.url
    assert status_uri.path == "/runtime/webhooks/durabletask/instances/" + check_status["id"]

    status = finished(sample_host, check_status)
    assert status["runtimeStatus"] == "Completed", status
    assert status["name"] == "hello_orchestrator"
    assert status["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]
    # The status endpoint answers 200 once the instance is done.
    assert sample_host.request("GET", check_status["statusQueryGetUri"], key=None).status == 200


def test_fan_out_fan_in(sample_host: Host) -> None:
    status = finished(sample_host, start(sample_host, "fan_out_fan_in"))
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == sum(n * n for n in range(1, 11))  # 385


def test_counter_entity(sample_host: Host) -> None:
    def read() -> str:
        reply = sample_host.request("GET", "/api/entityreadvalue")
        assert reply.status == 200, reply.text
        return reply.text

    assert read() == "No state found"
    for _ in range(3):
        reply = sample_host.request("POST", "/api/entitysetvalue")
        assert (reply.status, reply.text) == (200, "Done")
    # Signals are one-way: the state reaches 3 once the entity has run all three.
    wait_for(lambda: read() == "3", "the counter to reach 3")
    entity_url = "/runtime/webhooks/durabletask/entities/Counter/myCounter"
    assert sample_host.request("GET", entity_url, key=None).body == 3

    # reset through the Durable HTTP API's "signal entity" (POST .../entities/{name}/{key}?op=)
    reply = sample_host.request("POST", entity_url + "?op=reset", key=None)
    assert reply.status == 202, reply.text
    wait_for(lambda: read() == "0", "the counter to be reset")


def raise_event(host: Host, check_status: dict[str, Any], name: str, data: Any) -> Reply:
    url = check_status["sendEventPostUri"].replace("{eventName}", name)
    return host.request("POST", url, data, key=None)


def test_human_interaction_approved_in_time(sample_host: Host) -> None:
    check_status = start(sample_host, "approval_orchestrator", {"timeout_seconds": 300})
    # Raised at once: possibly before the orchestrator waits for it, which Durable allows.
    assert raise_event(sample_host, check_status, "Approval", True).status == 202
    status = finished(sample_host, check_status)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == "Approved: True"  # the JSON `true` arrived as Python True


def test_human_interaction_times_out(sample_host: Host) -> None:
    check_status = start(sample_host, "approval_orchestrator", {"timeout_seconds": 1})
    status = finished(sample_host, check_status)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == "Escalated"
    # Too late: the instance has finished, so the event is refused with 410 Gone.
    assert raise_event(sample_host, check_status, "Approval", True).status == 410


def test_function_keys(sample_host: Host) -> None:
    route = "/api/entityreadvalue"
    assert sample_host.request("GET", route, key=None).status == 401
    assert sample_host.request("GET", route, key="wrong").status == 401
    assert sample_host.request("GET", route, key=FUNCTION_KEY).status == 200
    assert sample_host.request("GET", f"{route}?code={FUNCTION_KEY}", key=None).status == 200
    assert sample_host.request("GET", route, key=MASTER_KEY).status == 200  # master opens all

    admin = "/api/maintenance"
    assert sample_host.request("GET", admin, key=None).status == 401
    assert sample_host.request("GET", admin, key=FUNCTION_KEY).status == 401
    reply = sample_host.request("GET", f"{admin}?code={MASTER_KEY}", key=None)
    assert (reply.status, reply.text) == (200, "maintenance ok")

    assert sample_host.request("GET", "/api/no-such-route").status == 404


def test_host_stops_cleanly_and_resumes_on_restart(sample_host: Host) -> None:
    """SIGTERM (Ctrl-C) ends the host with exit code 0; started again over the same storage it
    still knows every instance and entity."""
    check_status = start(sample_host, "hello_orchestrator")
    finished(sample_host, check_status)
    sample_host.request("POST", "/api/entitysetvalue")
    wait_for(lambda: sample_host.request("GET", "/api/entityreadvalue").text == "1", "the signal")

    assert sample_host.stop() == 0
    assert "Traceback" not in sample_host.log_text()

    sample_host.start()
    reply = sample_host.request("GET", check_status["statusQueryGetUri"], key=None)
    assert reply.body["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]
    assert sample_host.request("GET", "/api/entityreadvalue").text == "1"


def test_timer_trigger_fires_on_its_schedule(sample_host: Host) -> None:
    ticks = "/runtime/webhooks/durabletask/entities/Counter/ticks"

    def count() -> int:
        reply = sample_host.request("GET", ticks, key=None)
        return reply.body if reply.status == 200 else 0

    wait_for(lambda: count() >= 2, "the timer to fire at least twice")
