"""Telemetry leaf: structured logging, Prometheus metrics serving, OpenTelemetry tracing."""
