"""Migrations through real worker processes: the seed's async API runs chain(prepare, chord(lanes of
copy_batch), finalize, validate); a worker SIGKILLed mid-batch loses and duplicates nothing; a batch that
fails marks the migration failed with the cause and `resume` completes it; REST, WebSocket and CLI
show progress; no canary anywhere."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from tests.fleet.conftest import API_TOKEN
from tests.fleet.procs import leak_haystack, run_cli, wait_for
from tests.integration.backup_cases import pg_admin
from tests.servers import CANARY

pytestmark = pytest.mark.fleet
ROWS = 60_000


@pytest.fixture(scope="module")
def dbs(fleet: Any, embedded_pg: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """An inline PostgreSQL 18 source (password by env reference) and a PostgreSQL 15 target database."""
    src, dst = f"fleet_mig_src_{uuid.uuid4().hex[:6]}", f"fleet_mig_dst_{uuid.uuid4().hex[:6]}"
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'CREATE DATABASE "{src}"')
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY, dbname=src,
                         autocommit=True) as c:
        c.execute("CREATE TABLE plays (id bigint PRIMARY KEY, user_id int, track text, at timestamptz)")
        c.execute("INSERT INTO plays SELECT g, g %% 977, 'track ' || md5(g::text), now() - g * interval '1 s'"
                  " FROM generate_series(1, %s) g", (ROWS,))
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{dst}"')
    source = {"kind": "postgresql", "host": "127.0.0.1", "port": embedded_pg.port, "dbname": src, "user": "postgres",
              "password_env": "DBFLEET_TEST_CANARY"}
    yield source, {"kind": "postgresql", "host": "127.0.0.1", "dbname": dst, "user": "postgres"}, dst
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dst}" WITH (FORCE)')
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{src}" WITH (FORCE)')


def _target(dst: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname=dst, autocommit=True)


def _exact(dst: str) -> tuple[int, int, int]:
    """count, count distinct id, sum of ids of plays: equal to the source's only when no row is lost or duplicated."""
    with _target(dst) as c:
        return c.execute("SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0)::bigint FROM plays").fetchone()


EXPECTED = (ROWS, ROWS, ROWS * (ROWS + 1) // 2)


def test_sigkill_mid_batch_loses_and_duplicates_nothing(fleet: Any, dbs: Any) -> None:
    from workers import migrations

    source, target, dst = dbs
    victim = fleet.start_worker("migvictim", "migrations", concurrency=1)
    plan = migrations.plan(source, target, batch_size=15_000, parallel_workers=1, timeout=60,
                           migration_id="kill-" + uuid.uuid4().hex[:6])
    from engines.migration import engine

    plan = engine.prepare(plan, migrations.resolve(source), migrations.resolve(target))  # so the table exists
    migrations.store().save_plan(plan, None, None)
    holder = _target(dst)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE plays IN ACCESS EXCLUSIVE MODE")  # the first batch will wait inside its transaction
    migrations.run(plan.id)
    with _target(dst) as probe:
        wait_for(lambda: probe.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbfleet'"
                                       " AND wait_event_type = 'Lock'").fetchone()[0] >= 1, 60,
                 "a copy_batch waiting on the locked target table")
    victim.kill9()
    holder.execute("COMMIT")
    holder.close()
    fleet.start_worker("mig", "migrations", concurrency=2)
    final = migrations.MigrationProgress(plan.id).wait_sync(timeout=240)
    assert final["status"] == "completed", final["error"]
    assert final["batches_done"] == final["batches_total"] == 4
    assert _exact(dst) == EXPECTED
    assert final["report"]["ok"] and final["report"]["tables"][0]["target_rows"] == ROWS


def test_seed_api_runs_a_chord_and_reports_progress(fleet: Any, dbs: Any) -> None:
    from workers.api import create_api
    from workers.migrations import MigrationType, migrate_database

    source, target, dst = dbs
    with _target(dst) as c:
        c.execute("DROP TABLE IF EXISTS plays")

    async def main() -> tuple[Any, dict[str, Any]]:
        plan, progress = await migrate_database(source, target, MigrationType.FULL, batch_size=5000,
                                                parallel_workers=3, validation_enabled=True,
                                                tables_or_collections=["plays"])
        return plan, await progress.wait(timeout=240)

    plan, final = asyncio.run(main())
    assert len(plan.batches) == 12 and final["status"] == "completed" and final["report"]["ok"]
    assert _exact(dst) == EXPECTED and final["rows_per_second"] > 0
    api = TestClient(create_api(), headers={"Authorization": f"Bearer {API_TOKEN}"})
    progress = api.get(f"/api/migration/{plan.id}/progress").json()
    assert progress["batches_done"] == 12 and progress["tables"][0]["rows"] == ROWS
    assert api.get("/api/migration/nope/progress").status_code == 404
    with api.websocket_connect(f"/migration/{plan.id}/progress") as ws:
        assert ws.receive_json()["status"] == "completed"
    history = [r["name"] for r in _task_names_from_backend(fleet, plan.id)]
    assert {"migrations.prepare", "migrations.copy_batch", "migrations.finalize", "migrations.validate"} <= set(history)


def _task_names_from_backend(fleet: Any, migration_id: str) -> list[dict[str, Any]]:
    """Task names of the run, read from the result backend (result_extended keeps name and args)."""
    backend = redis.Redis.from_url(fleet.config.fleet.resolved_backend())
    out = []
    for key in backend.scan_iter("celery-task-meta-*"):
        meta = json.loads(backend.get(key) or "{}")
        if migration_id in json.dumps(meta.get("args")):
            out.append(meta)
    return out


def test_a_failing_batch_fails_the_migration_and_resume_completes_it(fleet: Any, dbs: Any) -> None:
    from workers import migrations

    source, target, dst = dbs
    with _target(dst) as c:
        c.execute("DROP TABLE IF EXISTS plays")
    plan = migrations.plan(source, target, batch_size=20_000, parallel_workers=2, lock_timeout=1)
    from engines.migration import engine

    plan = engine.prepare(plan, migrations.resolve(source), migrations.resolve(target))
    migrations.store().save_plan(plan, None, None)
    holder = _target(dst)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE plays IN ACCESS EXCLUSIVE MODE")  # every batch times out on the lock
    migrations.run(plan.id)
    failed = migrations.MigrationProgress(plan.id).wait_sync(timeout=120)
    holder.execute("COMMIT")
    holder.close()
    assert failed["status"] == "failed" and "lock timeout" in failed["error"], failed["error"]
    assert failed["batches_done"] < failed["batches_total"]
    out = run_cli(["migrate", "status", plan.id], fleet.env)
    assert out.returncode == 1 and "failed" in out.stdout
    out = run_cli(["migrate", "resume", plan.id], fleet.env, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _exact(dst) == EXPECTED
    done = migrations.store().progress(plan.id)
    assert done["status"] == "completed" and done["report"]["ok"]


def test_cli_plan_run_rollback_and_no_canary(fleet: Any, dbs: Any) -> None:
    source, target, dst = dbs
    with _target(dst) as c:
        c.execute("DROP TABLE IF EXISTS plays")
    src_arg, dst_arg = json.dumps(source), json.dumps(target)
    out = run_cli(["migrate", "plan", src_arg, dst_arg, "--batch-size", "30000", "--id", "cli-mig"], fleet.env)
    assert out.returncode == 0, out.stderr
    assert "plays" in out.stdout and "dbfleet migrate run cli-mig" in "".join(out.stdout.split("\n"))
    out = run_cli(["migrate", "run", "cli-mig"], fleet.env, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _exact(dst) == EXPECTED
    out = run_cli(["migrate", "rollback", "cli-mig"], fleet.env)
    assert out.returncode == 0 and "table:public.plays" in out.stdout
    with _target(dst) as c:
        assert c.execute("SELECT to_regclass('public.plays')").fetchone()[0] is None
    out = run_cli(["migrate", "status", "cli-mig"], fleet.env)
    assert out.returncode == 0 and "rolled_back" in out.stdout and "0 / 2" in out.stdout, out.stdout
    out = run_cli(["migrate", "run", "cli-mig"], fleet.env, timeout=240)  # starts over, on the worker
    assert out.returncode == 0, out.stdout + out.stderr
    assert _exact(dst) == EXPECTED
    haystack = leak_haystack(fleet)
    for where, text in haystack.items():
        assert CANARY not in text, f"canary password leaked into {where}"
    assert "dbfleet_migrations" in haystack["history"]
