"""Thin Azure Functions blueprints. Each translates between the Functions world (triggers,
bindings, HTTP) and `aos`; decisions live in `aos`."""
