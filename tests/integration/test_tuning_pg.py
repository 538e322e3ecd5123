"""The PostgreSQL tuner on a real PostgreSQL 15 cluster this module creates with initdb (pg_stat_statements
preloaded, HypoPG from Debian): index advice proven by cost, hygiene, safe apply, rollback and revert."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engines.config import DatabaseConfig
from engines.tuning import analyze, analyze_and_apply, revert
from engines.tuning.base import IndexAdvice, QueryRef, TuningSettings
from engines.tuning.pg_apply import IndexApplier

TEMPLATE = "h7_tuning_template"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
EXT_DIR = Path("/usr/share/postgresql/15/extension")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def cluster() -> Iterator[int]:
    """A PostgreSQL 15 cluster on a free loopback port with pg_stat_statements preloaded."""
    if not (PG_BIN / "initdb").exists():
        _missing(f"no PostgreSQL 15 binaries in {PG_BIN} (apt-get install postgresql-15)")
    for ext, package in (("hypopg", "postgresql-15-hypopg"), ("pg_qualstats", "postgresql-15-pg-qualstats")):
        if not (EXT_DIR / f"{ext}.control").exists():
            _missing(f"{ext} is not installed (ops/scripts/ensure-services.sh installs {package})")
    base = Path(tempfile.mkdtemp(prefix="h7_tuning_pg_"))  # not under pytest's 0700 root-owned tree
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", _free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-instructions", "--no-sync"]), check=True, capture_output=True)
    opts = (f"-h 127.0.0.1 -p {port} -k {base} -c shared_preload_libraries=pg_stat_statements,pg_qualstats "
            "-c pg_qualstats.sample_rate=1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                                 "-o", opts, "start"]), check=True, capture_output=True)
    try:
        with _admin(port) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        with _admin(port, TEMPLATE) as c:
            c.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
            c.execute(SCHEMA)
        yield port
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        subprocess.Popen(["rm", "-rf", str(base)])  # a slow shared disk: do not wait for the deletion


def _admin(port: int, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, autocommit=True)


def make_db(port: int, name: str, hypopg: bool = True, schema: bool = True) -> DatabaseConfig:
    """A fresh database ``name`` with pg_stat_statements (and hypopg), copied from the template that holds
    the schema below (analysed) when ``schema``; the registry entry for it."""
    with _admin(port) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE if schema else "template1")))
    with _admin(port, name) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("CREATE EXTENSION IF NOT EXISTS hypopg" if hypopg else "DROP EXTENSION IF EXISTS hypopg")
    return DatabaseConfig(id=name, kind="postgresql", host="127.0.0.1", port=port, dbname=name, user="postgres")


SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL, country text NOT NULL);
CREATE TABLE events (id bigserial PRIMARY KEY, account_id int NOT NULL, a int NOT NULL, b int NOT NULL,
                     note text, created_at timestamptz NOT NULL);
INSERT INTO accounts (email, country) SELECT 'user' || g || '@example.org', (ARRAY['de','fr','us','uk'])[1 + g % 4]
  FROM generate_series(1, 10000) g;
INSERT INTO events (account_id, a, b, note, created_at)
  SELECT 1 + g % 10000, g % 200, (g / 200) % 50, 'n' || g % 7, now() - g * interval '2 minutes'
  FROM generate_series(1, 50000) g;
ANALYZE;
"""


def run_workload(db: DatabaseConfig, queries: list[tuple[Any, tuple[Any, ...]]], times: int = 10) -> None:
    """Run each query ``times`` (with varying values) so pg_stat_statements records it."""
    with psycopg.connect(host=db.host, port=db.port, user=db.user, dbname=db.dbname, autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")
        for i in range(times):
            for query, params in queries:
                c.execute(query, tuple(p if not isinstance(p, int) else p + i for p in params)).fetchall()


def indexes(db: DatabaseConfig) -> dict[str, bool]:
    """Index name -> valid, in the public schema."""
    with psycopg.connect(host=db.host, port=db.port, user="postgres", dbname=db.dbname) as c:
        return {name: valid for name, valid in c.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall()}


WORKLOAD = [
    ("SELECT id FROM accounts WHERE email = %s", ("user17@example.org",)),
    ("SELECT id, note FROM events WHERE a = %s AND b = %s", (3, 7)),
    ("SELECT count(*) FROM events WHERE a = %s", (5,)),
    ("SELECT * FROM accounts WHERE id = %s", (42,)),
]


@pytest.fixture(scope="module")
def advised(cluster: int) -> tuple[DatabaseConfig, Any]:
    """The workload above on the schema above, analysed once."""
    db = make_db(cluster, "h7_tuning_advice")
    run_workload(db, WORKLOAD)
    return db, analyze(db, TuningSettings(only=("indexes",)))


def test_a_query_needing_a_single_column_index_gets_exactly_that_advice(advised: tuple[DatabaseConfig, Any]) -> None:
    _, report = advised
    on_accounts = [a for a in report.indexes if a.table == "accounts"]
    assert [a.columns for a in on_accounts] == [["email"]]
    advice = on_accounts[0]
    assert advice.proven and advice.savings_percent >= 50
    assert advice.cost_after < advice.cost_before and advice.estimated_bytes and advice.estimated_bytes > 0
    assert advice.statement == 'CREATE INDEX CONCURRENTLY "accounts_email_idx" ON "public"."accounts" ("email")'
    assert [q.query for q in advice.queries] == ["SELECT id FROM accounts WHERE email = $1"]


def test_one_composite_index_serves_both_the_pair_and_its_leading_column(advised: tuple[DatabaseConfig, Any]) -> None:
    _, report = advised
    on_events = [a for a in report.indexes if a.table == "events"]
    assert [a.columns for a in on_events] == [["a", "b"]], "one (a, b) index, no separate (a)"
    served = sorted(q.query for q in on_events[0].queries)
    assert served == ["SELECT count(*) FROM events WHERE a = $1", "SELECT id, note FROM events WHERE a = $1 AND b = $2"]
    assert all(q.cost_after < q.cost_before for q in on_events[0].queries)
    assert len(report.indexes) == 2


def test_a_well_indexed_workload_gets_no_index_advice(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_indexed")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("CREATE INDEX ON accounts (email); CREATE INDEX ON events (a, b)")
    run_workload(db, [*WORKLOAD, ("SELECT count(*) FROM events", ())])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert report.workload["statements"] >= 5
    assert report.indexes == []


def test_hygiene_finds_duplicate_unused_invalid_fk_and_sequence(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_hygiene")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("CREATE INDEX ev_a ON events (a); CREATE INDEX ev_a_b ON events (a, b);"
                  "CREATE INDEX ev_note ON events (note);"
                  "CREATE TABLE child (id int PRIMARY KEY, account_id int REFERENCES accounts (id));"
                  "CREATE SEQUENCE almost_done MAXVALUE 100; SELECT setval('almost_done', 95)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("CREATE UNIQUE INDEX CONCURRENTLY ev_dup_unique ON events (a)")
    report = analyze(db, TuningSettings(only=("hygiene",), unused_index_min_days=0))
    found = {(f.check, f.object) for f in report.hygiene}
    assert ("duplicate_indexes", "public.ev_a") in found
    assert ("duplicate_indexes", "public.ev_a_b") not in found
    assert ("invalid_indexes", "public.ev_dup_unique") in found
    assert ("unused_indexes", "public.ev_note") in found
    assert ("missing_fk_indexes", "public.child") in found
    assert ("sequences", "public.almost_done") in found
    assert not any(o.endswith("_pkey") for k, o in found if k in ("unused_indexes", "duplicate_indexes"))
    fk = next(f for f in report.hygiene if f.check == "missing_fk_indexes")
    assert fk.statement == 'CREATE INDEX CONCURRENTLY "child_account_id_idx" ON "public"."child" ("account_id")'


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


def _advice(table: str, columns: list[str], query: str, name: str) -> IndexAdvice:
    ref = QueryRef("1", query, 10, 0.0, 0.0)
    stmt = "(built by the applier)"
    return IndexAdvice("public", table, columns, name, stmt, [ref], 0.0, 0.0, 8192)


def test_a_change_that_does_not_help_is_rolled_back(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_rollback")
    with _admin(cluster, db.dbname or "") as c:
        applier = IndexApplier(c, db.id, TuningSettings(), local=True)
        change = applier.apply(_advice("events", ["note"], "SELECT count(*) FROM events WHERE a = $1", "ev_note_try"))
    assert change.status == "rolled_back", change.evidence
    assert change.evidence["savings_percent"] < 50
    assert "ev_note_try" not in indexes(db)


def test_a_failed_concurrent_build_leaves_no_invalid_index(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_failbuild")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("UPDATE events SET note = (SELECT string_agg(md5(random()::text || g), '')"
                  " FROM generate_series(1, 400) g) WHERE id = 7")  # far over the B-tree row limit
        applier = IndexApplier(c, db.id, TuningSettings(), local=True)
        change = applier.apply(_advice("events", ["note"], "SELECT id FROM events WHERE note = $1", "ev_note_big"))
    assert change.status == "failed"
    assert "index row" in change.evidence["reason"]
    assert "dropped the invalid index" in change.evidence["cleanup"]
    assert "ev_note_big" not in indexes(db)


def test_hostile_identifiers_are_quoted_in_advice_and_apply(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_hostile", schema=False)
    table, column = 'we"ird; DROP TABLE x;--', 'co"l;umn'
    with _admin(cluster, db.dbname or "") as c:
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


def test_a_role_without_pg_read_all_stats_gets_limited_advice_with_the_reason(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_reader")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("DROP ROLE IF EXISTS h7_tuning_reader; CREATE ROLE h7_tuning_reader LOGIN;"
                  "GRANT SELECT ON ALL TABLES IN SCHEMA public TO h7_tuning_reader")
    run_workload(db, WORKLOAD)
    reader = db.model_copy(update={"user": "h7_tuning_reader"})
    report = analyze(reader, TuningSettings(only=("indexes",)))
    assert any("lacks pg_read_all_stats" in line for line in report.limits)
    assert any("hidden" in line and "GRANT pg_read_all_stats" in line for line in report.limits)
    assert report.indexes == []


def test_without_hypopg_advice_is_marked_unproven_and_never_applied(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_nohypo", hypopg=False)
    run_workload(db, WORKLOAD[:1])
    report = analyze_and_apply(db, TuningSettings(only=("indexes",)))
    assert any(line.startswith("hypopg missing") for line in report.limits)
    assert [(a.table, a.columns, a.proven) for a in report.indexes] == [("accounts", ["email"], False)]
    assert "not proven" in (report.indexes[0].note or "")
    assert report.changes == [] and "accounts_email_idx" not in indexes(db)


def test_the_workload_window_counts_only_calls_since_the_previous_analysis(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_window")
    run_workload(db, WORKLOAD[:1], times=10)
    memory: dict[str, Any] = {}
    first = analyze(db, TuningSettings(only=("indexes",)), memory)
    with psycopg.connect(host=db.host, port=db.port, user="postgres", dbname=db.dbname, autocommit=True) as c:
        for i in range(3):
            c.execute(WORKLOAD[0][0], (f"user{i}@example.org",)).fetchall()
    second = analyze(db, TuningSettings(only=("indexes",)), memory)
    assert first.indexes[0].queries[0].calls == 10
    assert second.indexes[0].queries[0].calls == 3


def test_settings_advice_follows_pgtune_for_the_configured_host(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_settings", schema=False)
    host = {"memory_bytes": 16 * 1024**3, "cpus": 8, "storage": "ssd"}
    report = analyze(db, TuningSettings(only=("settings",), host=host, optimize_for="oltp"))
    advice = {s.name: s for s in report.settings}
    assert (advice["shared_buffers"].current, advice["shared_buffers"].advised) == ("128MB", "4GB")
    assert advice["shared_buffers"].restart is True
    assert advice["effective_cache_size"].advised == "12GB" and advice["effective_cache_size"].restart is False
    assert advice["random_page_cost"].advised == "1.1" and "ssd" in advice["random_page_cost"].reason
    assert advice["max_wal_size"].advised == "8GB"


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
    with _admin(cluster, db.dbname or "") as writer, _admin(cluster, db.dbname or "") as c:
        writer.execute("BEGIN")
        writer.execute("INSERT INTO accounts (email, country) VALUES ('w1@example.org', 'de')")
        applier = IndexApplier(c, db.id, TuningSettings(lock_timeout_ms=300), local=True)
        change = applier.apply(_advice("accounts", ["email"], "SELECT id FROM accounts WHERE email = $1", "acc_email_w"))
        writer.execute("INSERT INTO accounts (email, country) VALUES ('w2@example.org', 'de')")  # not blocked
        writer.execute("COMMIT")
        assert change.status == "failed" and "lock timeout" in change.evidence["reason"]
        left = indexes(db).get("acc_email_w")
        if left is not None:  # the writer still held its lock when the cleanup ran: it says what to run
            assert left is False and "DROP INDEX CONCURRENTLY" in change.evidence["cleanup"]
            applier.cleanup(_advice("accounts", ["email"], "SELECT 1", "acc_email_w"))
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


def test_repeated_heavy_aggregates_get_a_materialized_view_and_time_filters_a_partitioning_plan(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_layout")
    run_workload(db, [("SELECT a, count(*) AS n FROM events GROUP BY a", ()),
                      ("SELECT b, count(*) FROM events WHERE account_id = %s GROUP BY b", (3,)),
                      ("SELECT count(*) FROM events WHERE created_at > %s",
                       (datetime(2026, 1, 1, tzinfo=timezone.utc),))], times=4)
    settings = TuningSettings(only=("mviews", "partitions"), create_materialized_views=True,
                              partitioning_strategy="time_based", partition_min_rows=20_000, mview_min_calls=3)
    report = analyze(db, settings)
    assert [v.query for v in report.mviews] == ["SELECT a, count(*) AS n FROM events GROUP BY a"]
    view = report.mviews[0]
    assert view.statements[1].startswith("CREATE UNIQUE INDEX") and view.statements[1].endswith('("a")')
    assert view.statements[2] == f'REFRESH MATERIALIZED VIEW CONCURRENTLY "{view.name}"'
    with _admin(cluster, db.dbname or "") as c:  # the proposed statements run as printed
        for statement in view.statements:
            c.execute(statement)
        c.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(sql.Identifier(view.name)))
    [plan] = report.partitions
    assert (plan.table, plan.column, plan.interval) == ("events", "created_at", "week")
    assert 8 <= plan.partitions <= 12 and plan.pruning_share_percent > 0
    assert plan.statements[0].endswith('PARTITION BY RANGE ("created_at")')
    assert analyze(db, TuningSettings(only=("mviews", "partitions"))).mviews == []  # both off by default


def test_reload_only_settings_are_applied_without_restart_and_revert_restores_them(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_reload", schema=False)
    host = {"memory_bytes": 16 * 1024**3, "cpus": 8, "storage": "ssd"}
    settings = TuningSettings(only=("settings",), host=host, optimize_for="oltp", apply_settings="reload_only")

    def show(name: str, expect: str | None = None) -> str:
        """The value a new session sees (pg_reload_conf signals the postmaster: wait up to 5 s for it)."""
        for _ in range(50):
            with _admin(cluster, db.dbname or "") as c:
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
        with _admin(cluster) as c:
            c.execute("ALTER SYSTEM RESET ALL")
            c.execute("SELECT pg_reload_conf()")


def test_on_postgresql_18_without_hypopg_the_report_says_so_and_the_canary_never_shows(embedded_pg: Any) -> None:
    """The embedded PostgreSQL 18 has no HypoPG at all: advice is marked unproven; its password never leaks."""
    from tests.servers import CANARY

    name = "h7_tuning_pg18"
    admin = {"host": "127.0.0.1", "port": embedded_pg.port, "user": "postgres", "password": CANARY}
    with psycopg.connect(**admin, dbname="postgres", autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(**admin, dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_stat_statements")
        c.execute("CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL);"
                  "INSERT INTO accounts (email) SELECT 'user' || g || '@example.org' FROM generate_series(1, 20000) g;"
                  "ANALYZE")
        c.execute("SELECT pg_stat_statements_reset()")
        for i in range(5):
            c.execute("SELECT id FROM accounts WHERE email = %s", (f"user{i}@example.org",)).fetchall()
    db = DatabaseConfig(id=name, kind="postgresql", host="127.0.0.1", port=embedded_pg.port, dbname=name,
                        user="postgres", password_env="DBFLEET_TEST_CANARY")
    report = analyze(db, TuningSettings(only=("indexes", "hygiene")))
    assert any(line.startswith("hypopg missing: the server has no hypopg extension") for line in report.limits)
    assert [(a.columns, a.proven) for a in report.indexes] == [(["email"], False)]
    assert CANARY not in json.dumps(report.to_dict())


def test_a_huge_workload_is_cut_to_the_heaviest_max_queries_and_says_so(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_huge")
    variants = [(sql.SQL("SELECT id FROM accounts WHERE email IN ({})").format(sql.SQL(", ").join([sql.Placeholder()] * k)),
                 tuple(f"user{i}@example.org" for i in range(k))) for k in range(1, 41)]
    run_workload(db, variants, times=1)
    report = analyze(db, TuningSettings(only=("indexes",), max_queries=5))
    assert report.workload["statements"] == 5
    assert any(line.startswith("only the 5 heaviest statements were analysed") for line in report.limits)
    assert [a.columns for a in report.indexes] == [["email"]]


def test_pg_qualstats_sees_through_a_view_the_parser_cannot_follow(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_qualstats")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("CREATE VIEW event_notes AS SELECT id, b, note FROM events")
    run_workload(db, [("SELECT id, note FROM event_notes WHERE b = %s", (4,))])
    assert analyze(db, TuningSettings(only=("indexes",))).indexes == []  # pglast alone: a view, no table
    with _admin(cluster, db.dbname or "") as c:
        c.execute("CREATE EXTENSION pg_qualstats")
    run_workload(db, [("SELECT id, note FROM event_notes WHERE b = %s", (4,))])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert report.workload["qualstats_columns"] >= 1
    assert [(a.table, a.columns) for a in report.indexes] == [("events", ["b"])]
    assert report.indexes[0].queries[0].query == "SELECT id, note FROM event_notes WHERE b = $1"


def test_only_one_apply_runs_on_a_database_at_a_time(cluster: int) -> None:
    from engines.tuning.pg_apply import APPLY_LOCK

    db = make_db(cluster, "h7_tuning_onlyone")
    run_workload(db, WORKLOAD[:1])
    with _admin(cluster, db.dbname or "") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK,))  # another apply in progress
        report = analyze_and_apply(db, TuningSettings(only=("indexes",)))
    assert report.changes == [] and "apply refused: another tuning apply is running on this database" in report.limits
    assert [a.columns for a in report.indexes] == [["email"]] and "accounts_email_idx" not in indexes(db)


def test_a_column_without_a_btree_operator_class_is_skipped_with_the_reason(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_box")
    with _admin(cluster, db.dbname or "") as c:
        c.execute("CREATE TABLE shapes (id int, bx box); INSERT INTO shapes SELECT g, box(point(g, g), point(g + 1, g + 1))"
                  " FROM generate_series(1, 20000) g; ANALYZE shapes")
    run_workload(db, [("SELECT id FROM shapes WHERE bx = %s::box", ("(1,1),(2,2)",)), WORKLOAD[0]])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert [a.columns for a in report.indexes] == [["email"]]
    assert any(line.startswith("candidate shapes (bx) cannot be a B-tree index") for line in report.limits)


def test_materialized_views_are_created_only_on_request_and_revert_drops_them(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_mview_apply")
    run_workload(db, [("SELECT a, count(*) AS n FROM events GROUP BY a", ())], times=4)
    settings = TuningSettings(only=("mviews",), create_materialized_views=True)
    assert analyze_and_apply(db, settings).changes == []  # advice only unless apply_mviews
    report = analyze_and_apply(db, TuningSettings(only=("mviews",), create_materialized_views=True, apply_mviews=True))
    [change] = report.to_dict()["changes"]
    assert change["status"] == "kept" and change["kind"] == "create_mview"
    with _admin(cluster, db.dbname or "") as c:
        rows = c.execute(sql.SQL("SELECT count(*), sum(n) FROM {}").format(sql.Identifier(change["target"]["view"])))
        assert rows.fetchone() == (200, 50000)
        c.execute(sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(sql.Identifier(change["target"]["view"])))
    assert revert(db, settings, change)["result"] == "dropped"
    with _admin(cluster, db.dbname or "") as c:
        assert c.execute("SELECT count(*) FROM pg_matviews WHERE schemaname = 'public'").fetchone()[0] == 0
