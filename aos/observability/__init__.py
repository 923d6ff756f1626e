"""Observability: tracing (OpenTelemetry) across triggers, orchestrations and activities."""
