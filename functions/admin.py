"""The HTTP admin API (routes under /api; function keys or Entra ID, see aos.governance.auth).
Logic lives in aos.api."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.http import respond

bp = df.Blueprint()


@bp.route(route="agents", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def register_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.register)


@bp.route(route="agents", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def list_agents(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.list_agents)


@bp.route(route="agents/{agent_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def get_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.get_agent)


@bp.route(route="agents/{agent_id}", methods=["PUT"])
@bp.durable_client_input(client_name="client")
async def update_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.update_agent)


@bp.route(route="agents/{agent_id}/pause", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def pause_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.agents.state import Lifecycle
    from aos.api import agents

    return await respond(req, client, agents.pause_or_resume, Lifecycle.PAUSED)


@bp.route(route="agents/{agent_id}/resume", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def resume_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.agents.state import Lifecycle
    from aos.api import agents

    return await respond(req, client, agents.pause_or_resume, Lifecycle.SLEEPING)


@bp.route(route="agents/{agent_id}/retire", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def retire_agent(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.retire)


@bp.route(route="agents/{agent_id}/events", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def post_event(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.post_event)


@bp.route(route="agents/{agent_id}/goals", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def add_goal(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.add_goal)


@bp.route(route="agents/{agent_id}/goals", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def list_goals(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.list_goals)


@bp.route(route="agents/{agent_id}/goals/{goal_id}", methods=["PUT"])
@bp.durable_client_input(client_name="client")
async def update_goal(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.update_goal)


@bp.route(route="agents/{agent_id}/history", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def agent_history(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.history)


@bp.route(route="agents/{agent_id}/memories", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def agent_memories(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import agents

    return await respond(req, client, agents.memories)


@bp.route(route="workflows/{workflow}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_workflow(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import workflows

    return await respond(req, client, workflows.start)


@bp.route(route="workflows/{instance_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def workflow_status(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import workflows

    return await respond(req, client, workflows.get)


@bp.route(route="workflows/{instance_id}/approval", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def send_approval(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import workflows

    return await respond(req, client, workflows.approve)


@bp.route(route="agents/{agent_id}/mcp", methods=["POST", "GET", "DELETE"])
@bp.durable_client_input(client_name="client")
async def agent_mcp(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import mcp

    return await respond(req, client, mcp.serve)


@bp.route(route="policies", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def list_policies(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.list_policies)


@bp.route(route="policies/{name}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def get_policy(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.get_policy)


@bp.route(route="policies/{name}", methods=["PUT"])
@bp.durable_client_input(client_name="client")
async def put_policy(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.put_policy)


@bp.route(route="policies/{name}", methods=["DELETE"])
@bp.durable_client_input(client_name="client")
async def delete_policy(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.delete_policy)


@bp.route(route="agents/{agent_id}/audit", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def agent_audit(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.audit_records)


@bp.route(route="agents/{agent_id}/audit/verify", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def verify_agent_audit(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.verify_audit)


@bp.route(route="governance/audit", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def governance_audit(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.audit_records)


@bp.route(route="governance/audit/verify", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def verify_governance_audit(req: func.HttpRequest, client) -> func.HttpResponse:
    from aos.api import governance

    return await respond(req, client, governance.verify_audit)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from aos.api.openapi import document

    return func.HttpResponse(document(), mimetype="application/json")
