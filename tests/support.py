"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import functools

import azure.functions as func


@functools.cache
def app_functions() -> dict[str, func.FunctionBuilder]:
    """The app's functions, indexed once as the host does (indexing twice reports duplicates)."""
    from function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}


# Agent definitions the function-app and end-to-end tests share.
CEO = {
    "agent_id": "ceo",
    "purpose": "Strategic oversight and company growth",
    "purpose_scope": "Strategic planning, major decisions",
    "success_criteria": ["Revenue growth", "Team expansion"],
    "constraints": ["Never disclose customer data"],
    "subscriptions": ["board.request"],
}
CFO = {
    "agent_id": "cfo",
    "purpose": "Keep the company financially healthy and costs under control",
    "purpose_scope": "Budgets, forecasts, spending approvals",
    "success_criteria": ["Costs within budget"],
    "subscriptions": ["finance.*"],
}
CTO = {
    "agent_id": "cto",
    "purpose": "Build reliable technology that supports company growth",
    "purpose_scope": "Engineering, platform, hiring engineers",
    "success_criteria": ["Platform reliability", "Team expansion"],
}
