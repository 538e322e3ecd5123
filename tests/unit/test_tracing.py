"""Tracing config and the engine-phase helpers: off by default, validated endpoint, ids only as attributes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from engines.config import parse_config
from engines.errors import ConfigError
from engines.tracing import phase, traced


def load_config_data(tree: dict[str, Any]) -> Any:
    return parse_config(yaml.safe_dump(tree), "test")


def test_tracing_is_off_by_default_and_phases_cost_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import tracing

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    cfg = load_config_data({})
    assert cfg.fleet.tracing.otlp_endpoint is None
    assert tracing.endpoint(cfg) is None
    with phase("backup.run", database_id="x") as span:  # no provider: a non-recording span, or None
        assert span is None or not span.is_recording()


def test_the_endpoint_names_a_collector_and_never_carries_credentials() -> None:
    from workers import tracing

    cfg = load_config_data({"fleet": {"tracing": {"otlp_endpoint": "http://jaeger:4318"}}})
    assert tracing.endpoint(cfg) == "http://jaeger:4318/v1/traces"
    with pytest.raises(ConfigError, match="must not contain credentials"):
        load_config_data({"fleet": {"tracing": {"otlp_endpoint": "http://user:s3cret@jaeger:4318"}}})
    with pytest.raises(ConfigError, match="expected http"):
        load_config_data({"fleet": {"tracing": {"otlp_endpoint": "jaeger:4318"}}})
    with pytest.raises(ConfigError, match="sample_ratio"):
        load_config_data({"fleet": {"tracing": {"sample_ratio": 2}}})


def test_traced_records_ids_and_drops_anything_else() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import engines.tracing as et

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    real = et._trace

    class Api:  # the tracing API bound to this test's provider (the global one can be set once per process)
        @staticmethod
        def get_tracer(name: str) -> Any:
            return provider.get_tracer(name)

        get_current_span = staticmethod(real.get_current_span)

    et._trace = Api  # type: ignore[assignment]
    try:
        @traced("migration.copy_batch", lambda plan, batch_id: {"migration_id": plan, "batch_id": batch_id,
                                                                 "source": object()})
        def copy(plan: str, batch_id: int) -> int:
            return batch_id * 2

        @traced("broken.attributes", lambda: 1 / 0)
        def still_runs() -> str:
            return "ran"

        assert copy("m-1", 7) == 14
        assert still_runs() == "ran"
    finally:
        et._trace = real
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert dict(spans["migration.copy_batch"].attributes or {}) == {"dbfleet.migration_id": "m-1",
                                                                    "dbfleet.batch_id": 7}
    assert "broken.attributes" in spans
