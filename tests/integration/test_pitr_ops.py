"""WAL archive health, timeline following, --in-place PITR and PITR drills on one real PostgreSQL 15 cluster.

The cluster (initdb, archive_command = the real dbfleet wal push, see test_pitr.py) gets a base backup;
then archiving is broken on purpose (archive_command = /bin/false), a segment index is removed from the
repository, a replication slot holds WAL back: each shows up as a health check and as a metric. First,
though, the cluster is restored over itself to a point in time (--in-place: refused while it runs),
which starts timeline 2; it keeps archiving, and verify and a PITR past the switch follow the timeline
history. Last, a PITR drill measures the real RPO against markers left unarchived on purpose. The tests
run in file order on one cluster (one initdb and base backup for all, few WAL segments to replay: the
CI budget).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
import redis

from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive
from engines.config import DatabaseConfig, Thresholds, load_config
from engines.health import run_health
from engines.health.model import HealthReport
from engines.history import HistoryStore
from tests.integration.test_pitr import PG15, Env, _archive_everything, _new_world, _restore
from tests.servers import CANARY

pytestmark = pytest.mark.integration
DB_ID = "h18a_walhealth"


@pytest.fixture(scope="module")
def world() -> Iterator[Env]:
    env = _new_world(PG15, DB_ID)
    conf = json.loads(env.config.read_text())
    conf["databases"][DB_ID]["backup"]["data_dir"] = str(env.data)  # for --in-place
    env.config.write_text(json.dumps(conf))
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


def _batches(env: Env, first: int, count: int) -> dict[int, datetime]:
    """``count`` markers from ``first``, one transaction each, a little apart; their commit timestamps."""
    with psycopg.connect(host="127.0.0.1", port=env.port, user="postgres", password=CANARY, dbname="postgres",
                         autocommit=True) as conn:
        for n in range(first, first + count):
            conn.execute("INSERT INTO markers VALUES (%s)", (n,))
            time.sleep(0.02)
        rows = conn.execute("SELECT n, pg_xact_commit_timestamp(xmin) FROM markers WHERE n >= %s AND n < %s",
                            (first, first + count)).fetchall()
    return dict(rows)


def _between(stamps: dict[int, datetime], i: int) -> datetime:
    ordered = sorted(stamps.values())
    return ordered[i] + (ordered[i + 1] - ordered[i]) / 2


@pytest.fixture(scope="module")
def in_place(world: Env) -> dict[str, Any]:
    """Markers 10000.. on timeline 1; an in-place restore refused while the cluster runs, then done after a stop."""
    before = set(world.markers())
    tl1 = _batches(world, 10000, 12)
    target = _between(tl1, 5)
    _archive_everything(world)
    refused = world.run("backups", "restore", DB_ID, "--in-place", "--pitr", target.isoformat(), "--local",
                        check=False)
    still_up = world.sql("SELECT count(*) FROM markers")[0][0]
    moved_on_refusal = list(world.root.glob("src.before-restore-*"))
    world.pg("-m", "fast", "stop")
    done = world.run("backups", "restore", DB_ID, "--in-place", "--pitr", target.isoformat(), "--local")
    return {"before": before, "tl1": tl1, "target": target, "refused": refused, "still_up": still_up, "done": done,
            "moved_on_refusal": moved_on_refusal}


def test_in_place_is_refused_while_the_cluster_runs_and_touches_nothing(world: Env, in_place: dict[str, Any]) -> None:
    refused = in_place["refused"]
    assert refused.returncode != 0
    assert "is running" in refused.stderr and "postmaster.pid" in refused.stderr
    assert in_place["still_up"] == len(in_place["before"]) + 12  # the cluster kept serving
    assert in_place["moved_on_refusal"] == []  # refused before moving anything


def test_in_place_pitr_recovers_the_cluster_itself_to_the_time_and_keeps_the_old_directory(
        world: Env, in_place: dict[str, Any]) -> None:
    expected = in_place["before"] | {n for n, ts in in_place["tl1"].items() if ts <= in_place["target"]}
    assert set(world.markers()) == expected  # on the cluster's own port: the cluster itself was recovered
    assert len(expected) < len(in_place["before"]) + 12
    aside = list(world.root.glob("src.before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "PG_VERSION").exists() and (aside[0] / "pg_wal").is_dir()
    assert world.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] == 2
    assert "moved_aside" in in_place["done"].stdout
    assert "00000002.history" in WalArchive(world.repo(), DB_ID).names()  # the new timeline's history is archived
    auto = (world.data / "postgresql.auto.conf").read_text().splitlines()
    assert not [line for line in auto if line.startswith("recovery_target")]  # spent: a later backup must not carry it


@pytest.fixture(scope="module")
def timeline2(world: Env, in_place: dict[str, Any]) -> dict[int, datetime]:
    """Markers 20000.. written and archived on timeline 2, after the switch."""
    tl2 = _batches(world, 20000, 12)
    _archive_everything(world)
    return tl2


def test_verify_and_status_follow_the_timeline_switch_without_a_false_gap(world: Env, timeline2: dict[int, Any]) -> None:
    archive = WalArchive(world.repo(), DB_ID)
    assert any(n.startswith("00000002") and names.is_segment(n) for n in archive.names())
    assert world.run("backups", "verify", DB_ID, "--local").returncode == 0
    status = world.run("wal", "status", "--db", DB_ID)
    assert "00000002" in status.stdout  # unbroken to a segment of the new timeline
    victim = max(n for n in archive.names() if n.startswith("00000002") and names.is_segment(n))
    index = world.root / "repo" / "wal" / DB_ID / victim
    saved = index.read_bytes()
    index.unlink()
    try:  # a gap on the new timeline is a gap: the check does follow it
        world.sql("INSERT INTO markers VALUES (29999)")
        _archive_everything(world)
        # a newer segment is archived (at a segment boundary pg_walfile_name still names the old one, so the
        # precondition is read from the archive, not the server): the deleted one is now a gap behind it
        assert max(n for n in WalArchive(world.repo(), DB_ID).names() if names.is_segment(n)) > victim
        verify = world.run("backups", "verify", DB_ID, "--local", check=False)
        assert verify.returncode == 1 and victim in verify.stdout
    finally:
        index.write_bytes(saved)


def test_pitr_to_a_time_after_the_switch_replays_both_timelines(world: Env, in_place: dict[str, Any],
                                                                 timeline2: dict[int, datetime]) -> None:
    target = _between(timeline2, 7)
    proc, port = _restore(world, "r_tl2", "--pitr", target.isoformat())
    try:
        tl1 = {n for n, ts in in_place["tl1"].items() if ts <= in_place["target"]}
        tl2 = {n for n, ts in timeline2.items() if ts <= target}
        assert set(world.markers(port)) == in_place["before"] | tl1 | tl2
        assert len(tl2) == 8
        assert world.sql("SELECT timeline_id FROM pg_control_checkpoint()", port)[0][0] == 3  # promoted past 2
    finally:
        world.pg("-m", "fast", "stop", data=world.root / "r_tl2")
    assert "target_timeline" in proc.stdout


def test_pitr_along_the_old_timeline_recovers_its_abandoned_future(world: Env, in_place: dict[str, Any],
                                                                   timeline2: dict[int, datetime]) -> None:
    """Nothing the in-place restore went back past is lost: --timeline 1 replays timeline 1 to its end."""
    proc, port = _restore(world, "r_tl1", "--latest", "--timeline", "1")
    try:
        assert set(world.markers(port)) == in_place["before"] | set(in_place["tl1"])
    finally:
        world.pg("-m", "fast", "stop", data=world.root / "r_tl1")
    bad = world.run("backups", "restore", DB_ID, "--latest", "--timeline", "7", "--data-dir", str(world.root / "r_tl7"),
                    "--local", check=False)
    assert bad.returncode != 0 and "timeline 7" in bad.stderr and not (world.root / "r_tl7").exists()


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


def test_a_pitr_drill_measures_the_real_rpo_against_unarchived_commits(world: Env, timeline2: dict[int, Any]) -> None:
    world.run("backups", "run", DB_ID, "--physical", "--local")  # a base backup on timeline 2: a short replay
    archived = _batches(world, 30000, 3)
    _archive_everything(world)
    unarchived = _batches(world, 30100, 3)  # committed, still in the open segment: a recovery now loses them
    proc = world.run("backups", "drill", DB_ID, "--latest", "--local")
    assert "measured RPO" in proc.stdout
    rows = json.loads(world.run("history", "--script", "restore_drill", "--db", DB_ID, "--limit", "1", "--json").stdout)
    report = rows[0]["summary"]  # recorded in history like every drill
    assert report["ok"] is True and report["method"] == "pitr"
    recovered = datetime.fromisoformat(report["newest_recovered_at"])
    committed = datetime.fromisoformat(report["newest_committed_at"])
    assert max(archived.values()) <= recovered < min(unarchived.values())
    assert committed >= max(unarchived.values())
    assert report["rpo_seconds"] == pytest.approx((committed - recovered).total_seconds(), abs=0.002)
    assert report["rpo_seconds"] > 0 and report["rto_seconds"] > 0
    assert not list(world.root.glob("drill-*"))  # the scratch cluster is stopped and removed


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
