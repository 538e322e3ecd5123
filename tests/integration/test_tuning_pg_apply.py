"""The PostgreSQL tuner's safe apply on a real PostgreSQL 15 cluster: proven indexes kept, useless ones rolled
back, failed builds cleaned, lock_timeout behind writers, one apply at a time, settings and views, revert."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engines.tuning import analyze_and_apply, revert
from engines.tuning.base import TuningSettings
from engines.tuning.pg_apply import IndexApplier
from tests.integration.test_tuning_support import (
    WORKLOAD,
    admin,
    advice_for,
    indexes,
    make_db,
    run_workload,
    tuning_cluster,  # noqa: F401 - a session fixture
)


@pytest.fixture(scope="module")
def cluster(tuning_cluster: int) -> int:  # noqa: F811 - the session's cluster under a short name
    """The port of the tuning tests' PostgreSQL 15 cluster."""
    return tuning_cluster


def test_apply_keeps_the_proven_index_and_revert_drops_it(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_apply")
    run_workload(db, WORKLOAD[:1])
    report = analyze_and_apply(db, TuningSettings(only=("indexes",)))
    assert [c.status for c in report.changes] == ["kept"]
    change = report.changes[0]
    assert change.evidence["cost_after"] < change.evidence["cost_before"] * 0.5
    assert indexes(db).get("accounts_email_idx") is True
    record = report.to_dict()["changes"][0]
    assert revert(db, TuningSettings(), record)["result"] == "dropped"
    assert "accounts_email_idx" not in indexes(db)
    assert revert(db, TuningSettings(), record)["result"] == "already gone"


def test_a_change_that_does_not_help_is_rolled_back(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_rollback")
    with admin(cluster, db.dbname or "") as c:
        applier = IndexApplier(c, db.id, TuningSettings(), local=True)
        change = applier.apply(advice_for("events", ["note"], "SELECT count(*) FROM events WHERE a = $1", "ev_note_try"))
    assert change.status == "rolled_back", change.evidence
    assert change.evidence["savings_percent"] < 50
    assert "ev_note_try" not in indexes(db)


def test_a_failed_concurrent_build_leaves_no_invalid_index(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_failbuild")
    with admin(cluster, db.dbname or "") as c:
        c.execute("UPDATE events SET note = (SELECT string_agg(md5(random()::text || g), '')"
                  " FROM generate_series(1, 400) g) WHERE id = 7")  # far over the B-tree row limit
        applier = IndexApplier(c, db.id, TuningSettings(), local=True)
        change = applier.apply(advice_for("events", ["note"], "SELECT id FROM events WHERE note = $1", "ev_note_big"))
    assert change.status == "failed"
    assert "index row" in change.evidence["reason"]
    assert "dropped the invalid index" in change.evidence["cleanup"]
    assert "ev_note_big" not in indexes(db)


def test_hostile_identifiers_are_quoted_in_advice_and_apply(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_hostile", schema=False)
    table, column = 'we"ird; DROP TABLE x;--', 'co"l;umn'
    with admin(cluster, db.dbname or "") as c:
        c.execute(sql.SQL("CREATE TABLE {} (id int, {} int)").format(sql.Identifier(table), sql.Identifier(column)))
        c.execute(sql.SQL("INSERT INTO {} SELECT g, g FROM generate_series(1, 50000) g").format(sql.Identifier(table)))
        c.execute("ANALYZE")
    query = sql.SQL("SELECT id FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(column))
    with psycopg.connect(host="127.0.0.1", port=cluster, user="postgres", dbname=db.dbname, autocommit=True) as c:
        query_text = query.as_string(c)
    run_workload(db, [(query_text, (5,))])
    report = analyze_and_apply(db, TuningSettings(only=("indexes",)))
    assert [a.columns for a in report.indexes] == [[column]]
    assert '"we""ird; DROP TABLE x;--"' in report.indexes[0].statement
    assert [c.status for c in report.changes] == ["kept"]
    assert indexes(db)[report.indexes[0].name] is True


def test_cli_tune_apply_then_revert_records_both_in_history(cluster: int, fresh_runtime: Path, embedded_redis: Any,
                                                             tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from workers import runtime
    from workers.cli import cli

    db = make_db(cluster, "h7_tuning_cli")
    run_workload(db, WORKLOAD[:1])
    fresh_runtime.write_text(yaml.safe_dump({
        "fleet": {"cache_url": f"{embedded_redis.url}/7", "history_url": f"sqlite:///{tmp_path / 'h.db'}"},
        "databases": {"h7_tuning_cli": {"kind": "postgresql", "host": "127.0.0.1", "port": cluster,
                                        "dbname": "h7_tuning_cli", "user": "postgres"}},
        "database_scripts": {"performance_tuning": {"maintenance_window": "00:00-00:01", "min_cost_savings": 40}}}))
    runtime.reset()
    refused = CliRunner().invoke(cli, ["tune", "h7_tuning_cli", "--apply", "--local", "--only", "indexes"])
    assert refused.exit_code != 0 and "outside the maintenance window 00:00-00:01" in refused.output
    done = CliRunner().invoke(cli, ["tune", "h7_tuning_cli", "--apply", "--now", "--local", "--only", "indexes",
                                    "--format", "json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output[done.output.index("{"):])
    change = result["changes"][0]
    assert change["status"] == "kept" and change["reverse"]["action"] == "drop_index"
    assert change["reverse"]["statement"] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."accounts_email_idx"'
    assert indexes(db).get("accounts_email_idx") is True
    undone = CliRunner().invoke(cli, ["tune", "revert", change["change_id"], "--local"])
    assert undone.exit_code == 0, undone.output
    assert "dropped" in undone.output and "accounts_email_idx" not in indexes(db)
    scripts = [r["script_type"] for r in runtime.history().query(database_id="h7_tuning_cli")]
    assert scripts == ["performance_tuning_revert", "performance_tuning_apply", "performance_tuning_apply"]


def test_a_build_waiting_on_a_writer_gives_up_at_lock_timeout_and_never_blocks_it(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_locks")
    with admin(cluster, db.dbname or "") as writer, admin(cluster, db.dbname or "") as c:
        writer.execute("BEGIN")
        writer.execute("INSERT INTO accounts (email, country) VALUES ('w1@example.org', 'de')")
        applier = IndexApplier(c, db.id, TuningSettings(lock_timeout_ms=300), local=True)
        change = applier.apply(advice_for("accounts", ["email"], "SELECT id FROM accounts WHERE email = $1", "acc_email_w"))
        writer.execute("INSERT INTO accounts (email, country) VALUES ('w2@example.org', 'de')")  # not blocked
        writer.execute("COMMIT")
        assert change.status == "failed" and "lock timeout" in change.evidence["reason"]
        left = indexes(db).get("acc_email_w")
        if left is not None:  # the writer still held its lock when the cleanup ran: it says what to run
            assert left is False and "DROP INDEX CONCURRENTLY" in change.evidence["cleanup"]
            applier.cleanup(advice_for("accounts", ["email"], "SELECT 1", "acc_email_w"))
        assert "acc_email_w" not in indexes(db)
        assert c.execute("SELECT count(*) FROM accounts WHERE email LIKE 'w_@example.org'").fetchone()[0] == 2


def test_auto_apply_makes_a_scheduled_analysis_apply_and_its_change_revertible(
        cluster: int, fresh_runtime: Path, embedded_redis: Any, tmp_path: Path) -> None:
    import yaml

    from workers import runtime
    from workers.tuning import analyze_task, revert_task

    db = make_db(cluster, "h7_tuning_auto")
    run_workload(db, WORKLOAD[:1])
    fresh_runtime.write_text(yaml.safe_dump({
        "fleet": {"cache_url": f"{embedded_redis.url}/7", "history_url": f"sqlite:///{tmp_path / 'h.db'}"},
        "databases": {"h7_tuning_auto": {"kind": "postgresql", "host": "127.0.0.1", "port": cluster,
                                         "dbname": "h7_tuning_auto", "user": "postgres"}},
        "database_scripts": {"performance_tuning": {"auto_apply": True, "only": "indexes"}}}))
    runtime.reset()
    result = analyze_task.apply(args=("h7_tuning_auto", {})).get()
    assert [c["status"] for c in result["changes"]] == ["kept"]
    assert indexes(db).get("accounts_email_idx") is True
    undone = revert_task.apply(args=("h7_tuning_auto", {"change_id": result["changes"][0]["change_id"]})).get()
    assert undone["result"] == "dropped" and "accounts_email_idx" not in indexes(db)


def test_reload_only_settings_are_applied_without_restart_and_revert_restores_them(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_reload", schema=False)
    host = {"memory_bytes": 16 * 1024**3, "cpus": 8, "storage": "ssd"}
    settings = TuningSettings(only=("settings",), host=host, optimize_for="oltp", apply_settings="reload_only")

    def show(name: str, expect: str | None = None) -> str:
        """The value a new session sees (pg_reload_conf signals the postmaster: wait up to 5 s for it)."""
        for _ in range(50):
            with admin(cluster, db.dbname or "") as c:
                value = str(c.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])
            if expect is None or value == expect:
                return value
            time.sleep(0.1)
        return value

    before = {name: show(name) for name in ("effective_cache_size", "random_page_cost", "shared_buffers")}
    try:
        report = analyze_and_apply(db, settings)
        applied = {c.target["name"]: c for c in report.changes}
        assert "shared_buffers" not in applied  # needs a restart: never applied
        assert applied["effective_cache_size"].status == "kept" and show("effective_cache_size", "12GB") == "12GB"
        assert show("random_page_cost", "1.1") == "1.1" and show("shared_buffers") == before["shared_buffers"]
        for change in report.to_dict()["changes"]:
            revert(db, settings, change)
        assert {name: show(name, value) for name, value in before.items()} == before
    finally:
        with admin(cluster) as c:
            c.execute("ALTER SYSTEM RESET ALL")
            c.execute("SELECT pg_reload_conf()")


def test_only_one_apply_runs_on_a_database_at_a_time(cluster: int) -> None:
    from engines.tuning.pg_apply import APPLY_LOCK

    db = make_db(cluster, "h7_tuning_onlyone")
    run_workload(db, WORKLOAD[:1])
    with admin(cluster, db.dbname or "") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK,))  # another apply in progress
        report = analyze_and_apply(db, TuningSettings(only=("indexes",)))
    assert report.changes == [] and "apply refused: another tuning apply is running on this database" in report.limits
    assert [a.columns for a in report.indexes] == [["email"]] and "accounts_email_idx" not in indexes(db)


def test_materialized_views_are_created_only_on_request_and_revert_drops_them(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_mview_apply")
    run_workload(db, [("SELECT a, count(*) AS n FROM events GROUP BY a", ())], times=4)
    settings = TuningSettings(only=("mviews",), create_materialized_views=True)
    assert analyze_and_apply(db, settings).changes == []  # advice only unless apply_mviews
    report = analyze_and_apply(db, TuningSettings(only=("mviews",), create_materialized_views=True, apply_mviews=True))
    [change] = report.to_dict()["changes"]
    assert change["status"] == "kept" and change["kind"] == "create_mview"
    with admin(cluster, db.dbname or "") as c:
        rows = c.execute(sql.SQL("SELECT count(*), sum(n) FROM {}").format(sql.Identifier(change["target"]["view"])))
        assert rows.fetchone() == (200, 50000)
        c.execute(sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(sql.Identifier(change["target"]["view"])))
    assert revert(db, settings, change)["result"] == "dropped"
    with admin(cluster, db.dbname or "") as c:
        assert c.execute("SELECT count(*) FROM pg_matviews WHERE schemaname = 'public'").fetchone()[0] == 0


def test_an_applied_view_gets_a_refresh_entry_in_beat_that_refreshes_it_and_revert_removes_both(
        cluster: int, fresh_runtime: Path, embedded_redis: Any, tmp_path: Path) -> None:
    import yaml
    from celery.schedules import crontab

    db = make_db(cluster, "h7_tuning_mview_beat")
    run_workload(db, [("SELECT a, count(*) AS n FROM events GROUP BY a", ())], times=4)
    fresh_runtime.write_text(yaml.safe_dump({
        "fleet": {"cache_url": f"{embedded_redis.url}/8", "history_url": f"sqlite:///{tmp_path / 'h.db'}"},
        "databases": {db.id: {"kind": "postgresql", "host": "127.0.0.1", "port": cluster, "dbname": db.dbname,
                              "user": "postgres"}},
        "database_scripts": {"performance_tuning": {"create_materialized_views": True, "apply_mviews": True,
                                                    "only": "mviews"}}}))
    from workers import runtime
    from workers.tuning import apply_task, refresh_entry, refresh_task, revert_task

    runtime.reset()
    result = apply_task.apply(args=(db.id, {"now": True})).get()
    [change] = result["changes"]
    view = change["target"]["view"]
    assert change["status"] == "kept" and change["evidence"]["beat_entry"] == f"tuning_refresh:{db.id}:public.{view}"
    entry = refresh_entry(db.id, "public", view)
    assert entry.task == "tuning.refresh_view" and entry.options == {"queue": "tuning"}
    assert entry.args == [db.id] and entry.kwargs == {"options": {"schema": "public", "view": view}}
    assert isinstance(entry.schedule, crontab) and entry.schedule == crontab(minute="0")
    with admin(cluster, db.dbname or "") as c:
        c.execute("INSERT INTO events (account_id, a, b, created_at) SELECT 1, 7, 1, now() FROM generate_series(1, 30)")
    refreshed = refresh_task.apply(args=entry.args, kwargs=entry.kwargs).get()
    assert refreshed["concurrently"] is True
    assert refreshed["statement"] == sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}.{}").format(
        sql.Identifier("public"), sql.Identifier(view)).as_string(None)
    with admin(cluster, db.dbname or "") as c:
        assert c.execute(sql.SQL("SELECT sum(n) FROM {}").format(sql.Identifier(view))).fetchone()[0] == 50030
    undone = revert_task.apply(args=(db.id, {"change_id": change["change_id"]})).get()
    assert undone["result"] == "dropped" and undone["beat_entry_removed"] is True
    assert refresh_entry(db.id, "public", view) is None
    gone = refresh_task.apply(args=entry.args, kwargs=entry.kwargs).get()  # a run already queued by beat
    assert "no materialized view" in gone["error"]
    runs = runtime.history().query(script_type="performance_tuning_refresh", database_id=db.id)
    assert [r["status"] for r in runs][:2] == ["failed", "succeeded"]
