"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import functools

import azure.functions as func


@functools.cache
def app_functions() -> dict[str, func.FunctionBuilder]:
    """The app's functions, indexed once as the host does (indexing twice reports duplicates)."""
    from function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}
