"""Tracing through real workers: a worker configured with ``fleet.tracing.otlp_endpoint`` exports its spans over
OTLP/HTTP to a collector this test runs (it decodes the real protobuf requests); a migration's
chain(prepare, chord(lanes of copy_batch), finalize) | validate arrives as ONE trace, with the engine phases as
child spans carrying the migration id; no canary password in any span."""

from __future__ import annotations

import gzip
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from tests.fleet.procs import wait_for
from tests.integration.backup_cases import pg_admin
from tests.servers import CANARY

pytestmark = pytest.mark.fleet
pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed: pip install -e '.[tracing]'")


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.raw: list[bytes] = []
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(body, request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, body: bytes, request: Any) -> None:
        with self.lock:
            self.raw.append(body)
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}
                        self.spans.append({"name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                                           "parent": span.parent_span_id.hex(), "attributes": attrs,
                                           "service": resource.get("service.name")})

    def named(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["name"].startswith(prefix)]


@pytest.fixture(scope="module")
def traced_fleet(fleet: Any, embedded_pg: Any) -> Iterator[tuple[Any, Collector, str]]:
    collector = Collector()
    src, dst = f"trace_src_{uuid.uuid4().hex[:6]}", f"trace_dst_{uuid.uuid4().hex[:6]}"
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'CREATE DATABASE "{src}"')
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY, dbname=src,
                         autocommit=True) as c:
        c.execute("CREATE TABLE plays (id bigint PRIMARY KEY, note text)")
        c.execute("INSERT INTO plays SELECT g, md5(g::text) FROM generate_series(1, 9000) g")
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{dst}"')
    variant = fleet.variant("traced", 5, {"tracing": {"otlp_endpoint": collector.url, "flush_interval_ms": 100}}, {
        "trace_src": {"kind": "postgresql", "host": "127.0.0.1", "port": embedded_pg.port, "dbname": src,
                      "user": "postgres", "password_env": "DBFLEET_TEST_CANARY"},
        "trace_dst": {"kind": "postgresql", "host": "127.0.0.1", "dbname": dst, "user": "postgres"}})
    proc = variant.start_worker("traced", "migrations", concurrency=2)
    yield variant, collector, dst
    proc.stop()
    collector.server.shutdown()
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dst}" WITH (FORCE)')
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{src}" WITH (FORCE)')


def test_a_migration_chain_and_chord_is_one_trace_with_engine_phases(traced_fleet: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import migrations, runtime

    variant, collector, dst = traced_fleet
    monkeypatch.setenv("DBFLEET_CONFIG", str(variant.config_path))
    runtime.reset()
    try:
        plan = migrations.plan("trace_src", "trace_dst", batch_size=2000, parallel_workers=2, timeout=120)
        migrations.run(plan.id)
        final = migrations.MigrationProgress(plan.id).wait_sync(timeout=240, poll=0.2)
    finally:
        monkeypatch.undo()
        runtime.reset()
    assert final["status"] == "completed", final
    batches = len(plan.batches)
    assert batches >= 4  # 9,000 rows in batches of 2,000: the chord has several lanes' worth of batches

    def arrived() -> bool:
        names = [s["name"] for s in collector.named("run/migrations.")]
        return names.count("run/migrations.copy_batch") >= batches and "run/migrations.validate" in names

    wait_for(arrived, 60, "the worker's spans at the collector")
    runs = collector.named("run/migrations.")
    ours = [s for s in runs if s["name"] != "run/migrations.plan"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in ours:
        by_name.setdefault(s["name"], []).append(s)
    for step in ("start", "prepare", "copy_batch", "finalize", "validate"):
        assert f"run/migrations.{step}" in by_name, sorted(by_name)
    traces = {s["trace"] for s in ours}
    assert len(traces) == 1, f"the run is split over {len(traces)} traces: {sorted(by_name)}"
    assert all(s["service"] == "dbfleet" for s in ours)

    # engine phases are children of the task spans and name the migration
    phases = [s for s in collector.named("migration.copy_batch") if s["attributes"].get("dbfleet.migration_id")
              == plan.id]
    assert len(phases) == batches
    task_span_ids = {s["id"] for s in by_name["run/migrations.copy_batch"]}
    assert all(p["parent"] in task_span_ids and p["trace"] in traces for p in phases)
    assert {s["attributes"].get("dbfleet.batch_id") for s in phases} == {b.id for b in plan.batches}
    validate = [s for s in collector.named("migration.validate") if s["trace"] in traces]
    assert validate and validate[0]["attributes"]["dbfleet.migration_id"] == plan.id

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=dst) as c:
        assert c.execute("SELECT count(*) FROM plays").fetchone()[0] == 9000
    assert not any(CANARY.encode() in body for body in collector.raw), "the canary password reached a span"
