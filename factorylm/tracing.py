"""OpenTelemetry: one trace from the drift detection in the ingest, through the workflow
start, to every activity (temporalio's TracingInterceptor carries the context in headers).

Spans are exported by OTLP when the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables
say so, to the console with OTEL_TRACES_EXPORTER=console, otherwise nowhere — but trace ids
exist either way, so alerts and work orders can always name the trace.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

_configured = False


def _exporter() -> SpanExporter | None:
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        return ConsoleSpanExporter()
    return None


def setup_tracing(service: str) -> None:
    """Install the process's tracer provider once (CLI entry points call this)."""
    global _configured
    if _configured or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    )
    exporter = _exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def shutdown_tracing() -> None:
    """Export the spans still batched (what the SDK's own exit hook would do, for a process
    that leaves without the interpreter's shutdown: app/cli.py `entry`)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def interceptor(tracer: trace.Tracer | None = None) -> TracingInterceptor:
    return TracingInterceptor(tracer)


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
