"""WAL archive health checks and exporter metrics on a real PostgreSQL 15 cluster archiving with `dbfleet wal push`.

The cluster (initdb, archive_command = the real dbfleet wal push, see test_pitr.py) gets a base backup;
then archiving is broken on purpose (archive_command = /bin/false), a segment index is removed from the
repository, a replication slot holds WAL back: each shows up as a health check and as a metric.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive
from engines.config import DatabaseConfig, Thresholds, load_config
from engines.health import run_health
from engines.health.model import HealthReport
from engines.history import HistoryStore
from tests.integration.test_pitr import PG15, Env, _archive_everything, _new_world

pytestmark = pytest.mark.integration
DB_ID = "h18a_walhealth"


@pytest.fixture(scope="module")
def world() -> Iterator[Env]:
    env = _new_world(PG15, DB_ID)
    try:
        env.sql("CREATE TABLE markers (n int PRIMARY KEY)")
        env.sql("INSERT INTO markers SELECT generate_series(1, 1000)")
        env.run("backups", "run", DB_ID, "--physical", "--local")
        env.sql("INSERT INTO markers SELECT generate_series(1001, 2000)")
        _archive_everything(env)
        yield env
    finally:
        env.pg("-m", "immediate", "stop")
        shutil.rmtree(env.root, ignore_errors=True)


def _db(env: Env, **thresholds: float) -> DatabaseConfig:
    db = load_config(env.config).database(DB_ID)
    return db.model_copy(update={"thresholds": Thresholds(**thresholds)}) if thresholds else db


def _health(env: Env, db: DatabaseConfig, memory: dict[str, Any] | None = None) -> HealthReport:
    report = run_health(db, memory={} if memory is None else memory,
                        context={"wal_archive": lambda d: WalArchive(env.repo(), d.id)})
    assert report.status != "down", report.error
    return report


def _wait_for_failures(env: Env, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while env.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] < at_least:
        assert time.monotonic() < deadline, "archive_command = /bin/false never failed"
        time.sleep(0.2)


def _metrics(env: Env, report: HealthReport) -> dict[str, float]:
    """The exporter's samples for this database, from the report cached in the real Redis."""
    from workers import runtime
    from workers.exporter import FleetCollector

    cfg = load_config(env.config)
    cache = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    cache.set(runtime.HEALTH_KEY.format(DB_ID), json.dumps(report.to_dict()), ex=300)
    history = HistoryStore(f"sqlite:///{env.root}/exporter-history.db")
    out = {}
    for family in FleetCollector(cfg, cache, history)._wal():
        for sample in family.samples:
            if sample.labels.get("database") == DB_ID:
                out[sample.name] = sample.value
    return out


def test_a_healthy_archive_reports_no_lag_no_failures_no_gap(world: Env) -> None:
    report = _health(world, _db(world))
    checks = {c.check: c for c in report.checks}
    assert checks["wal_archive_lag"].status == "ok" and checks["wal_archive_lag"].value == 0
    assert checks["wal_archive_failures"].status == "ok"
    assert checks["wal_archive_gaps"].status == "ok" and checks["wal_archive_gaps"].value == 0
    assert checks["wal_archive_last_segment_age"].value is not None  # read from the repository's WAL index
    assert checks["replication_slot_wal"].status == "ok"
    assert "wal_stream" not in checks  # no dbfleet stream slot on this server
    metrics = _metrics(world, report)
    assert metrics["dbfleet_wal_archive_lag_seconds"] == 0
    assert metrics["dbfleet_wal_archive_failing"] == 0
    assert metrics["dbfleet_wal_archive_gap_segments"] == 0
    assert "dbfleet_wal_archive_last_segment_age_seconds" in metrics


def test_a_failing_archive_command_is_critical_lags_and_recovers(world: Env) -> None:
    db = _db(world, wal_archive_lag_seconds=0.5)
    memory: dict[str, Any] = {}
    _health(world, db, memory)  # the failure counter's baseline
    world.sql("ALTER SYSTEM SET archive_command = '/bin/false'")
    world.sql("SELECT pg_reload_conf()")
    try:
        world.sql("INSERT INTO markers SELECT generate_series(2001, 2100)")
        world.sql("SELECT pg_switch_wal()")
        _wait_for_failures(world, 2)  # the archiver retries once a second: the .ready file is older than that
        report = _health(world, db, memory)
        checks = {c.check: c for c in report.checks}
        assert checks["wal_archive_failures"].status == "critical"
        assert "still failing" in (checks["wal_archive_failures"].hint or "")
        assert checks["wal_archive_lag"].status != "ok"
        assert "1 WAL segments wait" in (checks["wal_archive_lag"].hint or "")
        metrics = _metrics(world, report)
        assert metrics["dbfleet_wal_archive_failing"] == 1
        assert metrics["dbfleet_wal_archive_lag_seconds"] > 0
    finally:
        world.sql("ALTER SYSTEM RESET archive_command")
        world.sql("SELECT pg_reload_conf()")
    _archive_everything(world)
    checks = {c.check: c for c in _health(world, db, memory).checks}
    assert checks["wal_archive_failures"].status != "critical"
    assert checks["wal_archive_lag"].status == "ok" and checks["wal_archive_lag"].value == 0


def test_a_segment_missing_from_the_repository_is_a_critical_gap(world: Env) -> None:
    archive = WalArchive(world.repo(), DB_ID)
    segments = sorted(n for n in archive.names() if names.is_segment(n))
    victim = segments[-2]
    index = world.root / "repo" / "wal" / DB_ID / victim
    saved = index.read_bytes()
    index.unlink()
    try:
        report = _health(world, _db(world))
        gaps = report.check("wal_archive_gaps")
        assert gaps is not None and gaps.status == "critical" and gaps.value == 1
        assert victim in (gaps.hint or "")
        assert _metrics(world, report)["dbfleet_wal_archive_gap_segments"] == 1
    finally:
        index.write_bytes(saved)
    assert _health(world, _db(world)).check("wal_archive_gaps").status == "ok"  # type: ignore[union-attr]


def test_a_replication_slot_holding_wal_back_is_reported_in_bytes(world: Env) -> None:
    world.sql("SELECT pg_create_physical_replication_slot('h18a_hold', true)")
    try:
        world.sql("INSERT INTO markers SELECT generate_series(3001, 5000)")
        held = int(world.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots"
                             " WHERE slot_name = 'h18a_hold'")[0][0])
        report = _health(world, _db(world, slot_wal_retention_bytes=1024))
        slot = report.check("replication_slot_wal")
        assert slot is not None and slot.status != "ok"
        assert slot.value >= held > 1024
        assert "h18a_hold" in (slot.hint or "")
        assert _metrics(world, report)["dbfleet_wal_slot_retained_bytes"] >= held
    finally:
        world.sql("SELECT pg_drop_replication_slot('h18a_hold')")


def test_a_database_that_does_not_archive_to_dbfleet_gets_no_wal_archive_checks(world: Env) -> None:
    db = _db(world).model_copy(update={"backup": _db(world).backup.model_copy(update={"method": "logical"})})
    world.sql("ALTER SYSTEM SET archive_command = '/bin/true'")
    world.sql("SELECT pg_reload_conf()")
    try:
        checks = {c.check for c in _health(world, db).checks}
    finally:
        world.sql("ALTER SYSTEM RESET archive_command")
        world.sql("SELECT pg_reload_conf()")
    assert not {"wal_archive_lag", "wal_archive_failures", "wal_archive_gaps"} & checks
    assert "replication_slot_wal" in checks
