"""Backups through real worker processes: progress in task state, SIGKILL mid-backup, the canary."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import psycopg
import pytest
import redis

from engines.backup.check import verify
from engines.backup.engine import open_repository
from engines.errors import RepositoryError
from tests.fleet.procs import wait_for
from tests.integration.backup_cases import pg_admin
from tests.servers import CANARY

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def big_db(fleet: Any, embedded_pg: Any) -> str:
    """~250 MB of barely compressible rows, so a backup runs long enough to be killed mid-way."""
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute("DROP DATABASE IF EXISTS fleet_big WITH (FORCE)")
        admin.execute("CREATE DATABASE fleet_big")
    with psycopg.connect(dbname="fleet_big", autocommit=True, host="127.0.0.1", port=embedded_pg.port,
                         user="postgres", password=CANARY) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO blobs SELECT g, (SELECT string_agg(md5(random()::text || g || i), '')"
                     " FROM generate_series(1, 48) i) FROM generate_series(1, 160000) g")
    return "pg18_big"


def _visible(database_id: str) -> list[tuple[str, str]]:
    from workers import runtime

    return open_repository(runtime.config()).backup_ids(database_id)


def test_sigkill_mid_backup_leaves_no_backup_and_the_next_run_succeeds(fleet: Any, big_db: str) -> None:
    victim = fleet.start_worker("bkvictim", "backups", concurrency=1)
    execution = fleet.manager().execute_script("backup", big_db)
    progress = wait_for(lambda: execution.state == "PROGRESS" and execution.async_result.info, 120,
                        "backup progress in the task state")
    assert progress["phase"] == "backup" and progress["bytes"] > 0 and progress["total"] > progress["bytes"]
    victim.kill9()
    assert execution.state == "PROGRESS", "the backup finished before it could be killed; grow big_db"
    try:
        visible = _visible(big_db)
    except RepositoryError as exc:  # the kill came before the repository was created
        assert "no repository" in str(exc)
        visible = []
    assert visible == []  # chunks may exist; no manifest, so no backup
    fleet.start_worker("bkrescuer", "backups", concurrency=1)
    result = execution.wait(timeout=240)  # redelivered (acks_late + reject_on_worker_lost), run again
    assert result["database_id"] == big_db and result["dump"]["row_counts"] == {"public.blobs": 160000}
    again = fleet.manager().execute_script("backup", big_db).wait(timeout=240)
    assert again["stats"]["new_chunks"] <= 2 < again["stats"]["chunks"]  # only the archive header's chunk + globals
    assert len(_visible(big_db)) == 2
    # the killed worker's lock is stale (its process is gone): prune runs and reclaims orphan chunks
    pruned = fleet.manager().execute_script("backup_prune", big_db).wait(timeout=120)
    assert len(pruned["forgotten"]) == 1 and pruned["chunks_deleted"] > 0
    from workers import runtime

    report = verify(open_repository(runtime.config()), big_db, read_data=True)
    assert report["ok"] and report["backups_checked"] == 1


def test_backup_verify_drill_through_the_fleet_never_leak_the_canary(fleet: Any) -> None:
    kw = {"host": "127.0.0.1", "port": fleet.config.databases["pg18"].port, "user": "postgres", "password": CANARY}
    with psycopg.connect(dbname="postgres", autocommit=True, **kw) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fleet_canary (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO fleet_canary SELECT g, 'v' || g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
    if "bkrescuer" not in fleet.procs:
        fleet.start_worker("bkrescuer", "backups", concurrency=1)
    manager = fleet.manager()
    backup = manager.execute_script("backup", "pg18").wait(timeout=240)
    checked = manager.execute_script("backup_verify", "pg18", {"read_data": True, "subset": 50}).wait(timeout=120)
    drilled = manager.execute_script("restore_drill", "pg18").wait(timeout=240)
    assert checked["ok"] and 0 < checked["chunks_read"] <= checked["chunks_referenced"]
    assert drilled["ok"] and drilled["rows_restored"] == drilled["rows_expected"] >= 500
    haystack = {"results": json.dumps([backup, checked, drilled]),
                "logs": "".join(p.text() for p in fleet.procs.values())}
    backend = redis.Redis.from_url(fleet.config.fleet.resolved_backend())
    haystack["result backend"] = "".join(str(backend.dump(k)) for k in backend.keys("*"))
    with sqlite3.connect(fleet.root / "history.db") as conn:
        haystack["history"] = "\n".join(conn.iterdump())
    haystack["repository"] = "".join(p.read_bytes().decode("latin-1") for p in (fleet.root / "repo").rglob("*")
                                     if p.is_file())
    for where, text in haystack.items():
        assert CANARY not in text, f"canary password leaked into {where}"
    assert "restore_drill" in haystack["history"]


def test_bad_backup_requests_fail_clearly_and_keep_the_worker(fleet: Any) -> None:
    if "bkrescuer" not in fleet.procs:
        fleet.start_worker("bkrescuer", "backups", concurrency=1)
    manager = fleet.manager()
    from engines.errors import ScriptFailed

    with pytest.raises(ScriptFailed, match="BackupNotFound: no backup of 'lite'"):
        manager.execute_script("restore", "lite").wait(timeout=60)
    with pytest.raises(ScriptFailed, match="unknown storage target 'nowhere'"):
        manager.execute_script("backup", "lite", {"storage": "nowhere"}).wait(timeout=60)
    with pytest.raises(ScriptFailed, match="ConnectionFailed"):
        manager.execute_script("backup", "ghost").wait(timeout=60)
    time.sleep(0.5)
    assert any(k.startswith("bkrescuer@") for k in fleet.ping())


def _pg_names(port: int, pattern: str) -> set[str]:
    with pg_admin(port, CANARY) as admin:
        return {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))}


def test_sigkill_mid_restore_leaves_no_trace_and_the_redelivered_restore_completes(
        fleet: Any, big_db: str, embedded_pg: Any) -> None:
    from engines.backup.dumpers.postgres import staging_name

    for name in [n for n in fleet.procs if n in ("bkvictim", "bkrescuer")]:  # only our victim may take it
        fleet.procs.pop(name).stop()
    victim = fleet.start_worker("rsvictim", "backups", concurrency=1)
    try:
        have_backup = bool(_visible(big_db))
    except RepositoryError:  # run alone: no repository yet
        have_backup = False
    if not have_backup:
        fleet.manager().execute_script("backup", big_db).wait(timeout=240)
    target, port = "h2_fleet_restored", embedded_pg.port
    with pg_admin(port, CANARY) as admin:
        admin.execute("DROP DATABASE IF EXISTS h2_fleet_restored WITH (FORCE)")
    execution = fleet.manager().execute_script("restore", big_db, {"target_dbname": target})
    progress = wait_for(lambda: execution.state == "PROGRESS" and execution.async_result.info, 120,
                        "restore progress in the task state")
    assert progress["phase"] == "restore" and progress["bytes"] > 0
    private = fleet.root / "state" / "private"
    assert [p.name for p in private.iterdir()] == [execution.task_id]  # the spool, private to the task
    assert (private.stat().st_mode & 0o777) == 0o700
    victim.kill9()
    assert execution.state == "PROGRESS", "the restore finished before it could be killed; grow big_db"
    assert target not in _pg_names(port, "h2_fleet%")  # half a restore is only ever in the staging database
    fleet.start_worker("bkrescuer", "backups", concurrency=1)
    result = execution.wait(timeout=300)  # redelivered: drops the killed run's staging database, redoes it
    assert result["dbname"] == target and result["created"]
    with psycopg.connect(dbname=target, host="127.0.0.1", port=port, user="postgres", password=CANARY) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 160000
    assert staging_name(target) not in _pg_names(port, "dbfleet_restoring%")
    assert list(private.iterdir()) == []  # swept at worker start, removed at task end
    leftovers = [p for p in (fleet.root / "state").rglob("*") if p.is_file() and
                 (CANARY.encode() in p.read_bytes() or p.name.startswith("pgpass"))]
    assert leftovers == []
    with pg_admin(port, CANARY) as admin:
        admin.execute("DROP DATABASE IF EXISTS h2_fleet_restored WITH (FORCE)")
