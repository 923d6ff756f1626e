# A Durable Functions app written the way the Azure Durable Functions documentation for the
# Python v2 programming model writes it (quickstart, "Durable Functions patterns", "Entity
# functions"), so the end-to-end tests prove the local host runs documented code unchanged.
# Differences from the documented snippets, each only to make the sample testable:
# - the app's HTTP auth level is FUNCTION (the snippets use ANONYMOUS), so keys are exercised;
# - the starter passes the request body, if any, as the orchestration input (as the
#   fan-in/fan-out sample does), so the human-interaction timeout can be short in a test;
# - orchestrators return their result, and the activities the snippets leave undefined
#   (F1-F3, RequestApproval, ProcessApproval, Escalate) are defined;
# - the human-interaction timeout comes from the input (72 hours without one), and its event is
#   named "Approval" (the pattern's snippet says "ApprovalEvent").
# Nothing here imports AOS.

import json
import logging
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

myApp = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


# An HTTP-triggered function with a Durable Functions client binding
@myApp.route(route="orchestrators/{functionName}")
@myApp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client):
    function_name = req.route_params.get("functionName")
    body = req.get_body()
    payload = json.loads(body.decode()) if body else None
    instance_id = await client.start_new(function_name, client_input=payload)

    logging.info(f"Started orchestration with ID = '{instance_id}'.")
    response = client.create_check_status_response(req, instance_id)
    return response


# Function chaining
@myApp.orchestration_trigger(context_name="context")
def hello_orchestrator(context: df.DurableOrchestrationContext):
    result1 = yield context.call_activity("say_hello", "Tokyo")
    result2 = yield context.call_activity("say_hello", "Seattle")
    result3 = yield context.call_activity("say_hello", "London")

    return [result1, result2, result3]


@myApp.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    return f"Hello {city}"


# Fan-out/fan-in
@myApp.orchestration_trigger(context_name="context")
def fan_out_fan_in(context: df.DurableOrchestrationContext):
    # Get a list of N work items to process in parallel.
    work_batch = yield context.call_activity("F1", None)

    parallel_tasks = [context.call_activity("F2", b) for b in work_batch]

    outputs = yield context.task_all(parallel_tasks)

    # Aggregate all N outputs and send the result to F3.
    total = sum(outputs)
    yield context.call_activity("F3", total)
    return total


@myApp.activity_trigger(input_name="ignored")
def F1(ignored):
    return [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


@myApp.activity_trigger(input_name="item")
def F2(item: int) -> int:
    return item * item


@myApp.activity_trigger(input_name="total")
def F3(total: int) -> int:
    logging.info(f"Sum of squares: {total}")
    return total


# Aggregator: a durable entity
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
        context.set_result(current_value)
    context.set_state(current_value)


# An HTTP-Triggered Function with a Durable Functions Client to set a value on a durable entity
@myApp.route(route="entitysetvalue")
@myApp.durable_client_input(client_name="client")
async def http_set(req: func.HttpRequest, client):
    entityId = df.EntityId("Counter", "myCounter")
    await client.signal_entity(entityId, "add", 1)
    return func.HttpResponse("Done", status_code=200)


# An HTTP-Triggered Function with a Durable Functions Client to retrieve the state of a durable
# entity
@myApp.route(route="entityreadvalue")
@myApp.durable_client_input(client_name="client")
async def http_read(req: func.HttpRequest, client):
    entityId = df.EntityId("Counter", "myCounter")
    entity_state_result = await client.read_entity_state(entityId)
    entity_state = "No state found"
    if entity_state_result.entity_exists:
        entity_state = str(entity_state_result.entity_state)
    return func.HttpResponse(entity_state)


# Human interaction
@myApp.orchestration_trigger(context_name="context")
def approval_orchestrator(context: df.DurableOrchestrationContext):
    yield context.call_activity("RequestApproval", None)

    timeout = (context.get_input() or {}).get("timeout_seconds", 72 * 3600)
    due_time = context.current_utc_datetime + timedelta(seconds=timeout)
    durable_timeout_task = context.create_timer(due_time)
    approval_event_task = context.wait_for_external_event("Approval")

    winning_task = yield context.task_any([approval_event_task, durable_timeout_task])

    if approval_event_task == winning_task:
        durable_timeout_task.cancel()
        result = yield context.call_activity("ProcessApproval", approval_event_task.result)
    else:
        result = yield context.call_activity("Escalate", None)
    return result


@myApp.activity_trigger(input_name="request")
def RequestApproval(request):
    logging.info("Approval requested")


@myApp.activity_trigger(input_name="approval")
def ProcessApproval(approval):
    return f"Approved: {approval!r}"


@myApp.activity_trigger(input_name="escalation")
def Escalate(escalation):
    return "Escalated"


# An admin-level route: only the master key opens it
@myApp.route(route="maintenance", auth_level=func.AuthLevel.ADMIN)
def maintenance(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("maintenance ok")


# Timer trigger (the timer trigger docs' shape), counting its runs in an entity of its own.
@myApp.timer_trigger(schedule="*/2 * * * * *", arg_name="myTimer", run_on_startup=True)
@myApp.durable_client_input(client_name="client")
async def tick(myTimer: func.TimerRequest, client) -> None:
    if myTimer.past_due:
        logging.info("The timer is past due!")
    await client.signal_entity(df.EntityId("Counter", "ticks"), "add", 1)
