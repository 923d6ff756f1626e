"""Multi-agent workflow orchestrations (logic in aos.workflows.multi)."""

from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration="workflow_chain")
def workflow_chain(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import chain

    return (yield from chain(context))


@bp.orchestration_trigger(context_name="context", orchestration="workflow_fanout")
def workflow_fanout(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import fanout

    return (yield from fanout(context))


@bp.orchestration_trigger(context_name="context", orchestration="workflow_decide")
def workflow_decide(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import decide_one

    return (yield from decide_one(context))


@bp.orchestration_trigger(context_name="context", orchestration="workflow_vote")
def workflow_vote(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import vote

    return (yield from vote(context))


@bp.orchestration_trigger(context_name="context", orchestration="workflow_approval")
def workflow_approval(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import approval

    return (yield from approval(context))


@bp.orchestration_trigger(context_name="context", orchestration="workflow_heartbeat")
def workflow_heartbeat(context: df.DurableOrchestrationContext):
    from aos.workflows.multi import heartbeat

    return (yield from heartbeat(context))
