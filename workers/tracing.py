"""Distributed tracing for the fleet (OpenTelemetry; Jaeger, Tempo or any OTLP collector).

When ``fleet.tracing.otlp_endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, every process that runs or
sends tasks gets a tracer provider exporting over OTLP/HTTP: ``opentelemetry-instrumentation-celery`` makes a
span for each task sent (``apply_async``) and run, and carries the trace context in the message headers, so a
migration's ``chain(prepare, chord(lanes of copy_batch), finalize) | validate`` is one trace; engine phases
(``engines/tracing.py``) are child spans with database ids as attributes. Off otherwise: no provider, no
exporter thread, no cost. Spans carry ids and task names, never task arguments or secrets.

Prefork workers set the provider up in each child (``worker_process_init``): an exporter thread does not survive
``fork``. Application code that sends tasks calls :func:`configure` (``DatabaseScriptManager.initialize`` does).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

log = logging.getLogger("dbfleet")
_provider: Any = None


def endpoint(cfg: Any) -> str | None:
    """The OTLP/HTTP traces URL from the config or OTEL_EXPORTER_OTLP_ENDPOINT (None: tracing off)."""
    base = cfg.fleet.tracing.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def configure(cfg: Any = None, exporter: Any = None) -> bool:
    """Turn tracing on in this process (once); True when it is on. ``exporter`` replaces OTLP (tests)."""
    global _provider
    if _provider is not None:
        return True
    if cfg is None:
        from workers import runtime

        cfg = runtime.config()
    url = endpoint(cfg)
    if exporter is None and url is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        log.warning("tracing is configured but OpenTelemetry is not installed (%s): pip install 'dbfleet[tracing]'",
                    exc.name)
        return False
    settings = cfg.fleet.tracing
    resource = Resource.create({"service.name": settings.service_name,
                                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=10),
                                                       schedule_delay_millis=settings.flush_interval_ms))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    log.info("tracing on: spans to %s", url or type(exporter).__name__)
    return True


def shutdown() -> None:
    """Flush what is buffered (a worker child or the worker stopping)."""
    if _provider is not None:
        try:
            _provider.force_flush(5000)
            _provider.shutdown()
        except Exception as exc:  # the collector is down: spans are lost, never the shutdown
            log.debug("tracing flush failed: %s", type(exc).__name__)


@worker_process_init.connect
def _child(**_: Any) -> None:
    configure()


@worker_init.connect
def _worker(sender: Any = None, **_: Any) -> None:
    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "") + getattr(pool, "__name__", "")
    if "prefork" not in str(name):  # solo / threads: tasks run in this process
        configure()


@worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    shutdown()


@worker_shutdown.connect
def _worker_exit(**_: Any) -> None:
    shutdown()
