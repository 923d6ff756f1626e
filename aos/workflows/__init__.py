"""Orchestrator logic: an agent's turn and the multi-agent workflows.

These are the generator functions that `functions/` registers as orchestrations. They must stay
deterministic: time from `context.current_utc_datetime`, ids from the input or
`context.new_uuid()`, no I/O (that is what activities are for).
"""
