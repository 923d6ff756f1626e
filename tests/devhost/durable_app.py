"""A Durable Functions app written the way the Durable Functions Python documentation writes its
samples (v2 programming model), for the local durable runtime's tests."""

from __future__ import annotations

import json
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

myApp = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


# An HTTP-triggered function with a Durable Functions client binding
@myApp.route(route="orchestrators/{functionName}")
@myApp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client):
    function_name = req.route_params.get("functionName")
    payload = req.get_body()
    client_input = json.loads(payload) if payload else None
    instance_id = await client.start_new(function_name, None, client_input)
    response = client.create_check_status_response(req, instance_id)
    return response


# Function chaining
@myApp.orchestration_trigger(context_name="context")
def hello_orchestrator(context):
    result1 = yield context.call_activity("hello", "Tokyo")
    result2 = yield context.call_activity("hello", "Seattle")
    result3 = yield context.call_activity("hello", "London")
    return [result1, result2, result3]


@myApp.activity_trigger(input_name="city")
def hello(city: str):
    return f"Hello {city}"


# Fan-out/fan-in
@myApp.orchestration_trigger(context_name="context")
def fan_out_fan_in(context):
    work_batch = yield context.call_activity("get_work_batch", context.get_input())
    parallel_tasks = [context.call_activity("process_work_item", item) for item in work_batch]
    outputs = yield context.task_all(parallel_tasks)
    total = sum(outputs)
    return total


@myApp.activity_trigger(input_name="count")
def get_work_batch(count: int):
    return list(range(1, count + 1))


@myApp.activity_trigger(input_name="item")
async def process_work_item(item: int):
    return item * item


# A counter entity
@myApp.entity_trigger(context_name="context")
def Counter(context):
    current_value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        amount = context.get_input()
        current_value += amount
    elif operation == "reset":
        current_value = 0
    elif operation == "get":
        pass
    elif operation == "fail":
        raise ValueError("the counter cannot do that")
    context.set_state(current_value)
    context.set_result(current_value)


@myApp.orchestration_trigger(context_name="context")
def counter_orchestrator(context):
    entity_id = df.EntityId("Counter", context.get_input())
    context.signal_entity(entity_id, "add", 3)
    context.signal_entity(entity_id, "add", 4)
    current = yield context.call_entity(entity_id, "get")
    try:
        yield context.call_entity(entity_id, "fail")
    except Exception as error:
        return {"value": current, "error": str(error)}
    return {"value": current, "error": None}


# Human interaction: approval or escalation after a timeout
@myApp.orchestration_trigger(context_name="context")
def approval_workflow(context):
    timeout_seconds = context.get_input()
    deadline = context.current_utc_datetime + timedelta(seconds=timeout_seconds)
    timeout_task = context.create_timer(deadline)
    approval_task = context.wait_for_external_event("Approval")
    winner = yield context.task_any([approval_task, timeout_task])
    if winner == approval_task:
        timeout_task.cancel()
        return f"approved: {approval_task.result}"
    return "escalated"


# Sub-orchestrations
@myApp.orchestration_trigger(context_name="context")
def provision_device(context):
    device_id = context.get_input()
    yield context.call_activity("hello", device_id)
    return {"device": device_id, "parent": context.parent_instance_id}


@myApp.orchestration_trigger(context_name="context")
def provision_devices(context):
    device_ids = context.get_input()
    tasks = [
        context.call_sub_orchestrator(
            "provision_device", device_id, instance_id=f"{context.instance_id}-{device_id}"
        )
        for device_id in device_ids
    ]
    results = yield context.task_all(tasks)
    chained = yield context.call_sub_orchestrator("hello_orchestrator")
    return {"devices": results, "chained": chained}


@myApp.orchestration_trigger(context_name="context")
def failing_parent(context):
    try:
        yield context.call_sub_orchestrator("failing_child")
    except Exception as error:
        return f"child failed: {error}"
    return "child succeeded"


@myApp.orchestration_trigger(context_name="context")
def failing_child(context):
    yield context.call_activity("hello", "x")
    raise RuntimeError("the child gave up")


# Retries
ATTEMPTS: dict[str, int] = {}


@myApp.activity_trigger(input_name="key")
def flaky(key: str):
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= 2:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} failed")
    return f"succeeded after {ATTEMPTS[key]} attempts"


@myApp.orchestration_trigger(context_name="context")
def retrying_orchestrator(context):
    key, attempts = context.get_input()
    retry_options = df.RetryOptions(
        first_retry_interval_in_milliseconds=20, max_number_of_attempts=attempts
    )
    try:
        result = yield context.call_activity_with_retry("flaky", retry_options, key)
    except Exception as error:
        return f"gave up: {error}"
    return result


# Custom status
@myApp.orchestration_trigger(context_name="context")
def status_reporter(context):
    context.set_custom_status({"stage": "started"})
    yield context.call_activity("hello", "Tokyo")
    context.set_custom_status({"stage": "greeted", "guid": str(context.new_uuid())})
    approval = yield context.wait_for_external_event("Continue")
    context.set_custom_status({"stage": "done"})
    return approval


# Eternal orchestration (continue_as_new) that stops after a number of rounds
@myApp.orchestration_trigger(context_name="context")
def eternal_cleanup(context):
    state = context.get_input()
    yield context.call_activity("hello", f"round {state['round']}")
    if state["round"] >= state["stop_after"]:
        return state["round"]
    next_cleanup = context.current_utc_datetime + timedelta(milliseconds=10)
    yield context.create_timer(next_cleanup)
    context.continue_as_new({"round": state["round"] + 1, "stop_after": state["stop_after"]})


@myApp.orchestration_trigger(context_name="context")
def event_collector(context):
    items = context.get_input() or []
    item = yield context.wait_for_external_event("item")
    items.append(item)
    if len(items) == 3:
        return items
    context.continue_as_new(items)


# Failures
@myApp.activity_trigger(input_name="message")
def explode(message: str):
    raise ValueError(message)


@myApp.orchestration_trigger(context_name="context")
def failing_orchestrator(context):
    yield context.call_activity("explode", "kaboom")
    return "unreachable"


@myApp.orchestration_trigger(context_name="context")
def calls_http(context):
    yield context.call_http("GET", "https://example.invalid/")
    return "unreachable"


@myApp.orchestration_trigger(context_name="context")
def waits_forever(context):
    value = yield context.wait_for_external_event("Never")
    return value


# Work that a restart interrupts: the gate activity waits until the test releases it.
GATES: dict[str, tuple] = {}
COMPLETIONS: dict[str, int] = {}


@myApp.activity_trigger(input_name="key")
async def wait_at_gate(key: str):
    started, release = GATES[key]
    started.set()
    await release.wait()
    return f"released {key}"


@myApp.activity_trigger(input_name="key")
def record_completion(key: str):
    COMPLETIONS[key] = COMPLETIONS.get(key, 0) + 1
    return COMPLETIONS[key]


@myApp.orchestration_trigger(context_name="context")
def resumable_orchestrator(context):
    key = context.get_input()
    first = yield context.call_activity("hello", "before")
    gated = yield context.call_activity("wait_at_gate", key)
    finished = yield context.call_activity("record_completion", key)
    return [first, gated, finished]


@myApp.orchestration_trigger(context_name="context")
def retrying_parent(context):
    retry_options = df.RetryOptions(
        first_retry_interval_in_milliseconds=10, max_number_of_attempts=2
    )
    try:
        yield context.call_sub_orchestrator_with_retry(
            "failing_child", retry_options, None, f"{context.instance_id}-child"
        )
    except Exception as error:
        return f"child failed twice: {error}"
    return "child succeeded"


# An orchestrator whose code changes between replays (as after an unsafe deployment)
CHANGING: dict[str, str] = {"activity": "hello"}


@myApp.orchestration_trigger(context_name="context")
def changing_orchestrator(context):
    yield context.call_activity(CHANGING["activity"], "one")
    value = yield context.wait_for_external_event("Next")
    return value


FUNCTIONS = myApp.get_functions()
