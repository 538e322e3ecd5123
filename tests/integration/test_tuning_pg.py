"""The PostgreSQL tuner's analysis on a real PostgreSQL 15 cluster with HypoPG: index advice proven by cost
(single, composite, none when indexed), hygiene, settings, views and partitions, limits."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engines.config import DatabaseConfig
from engines.tuning import analyze, analyze_and_apply
from engines.tuning.base import TuningSettings
from tests.integration.test_tuning_support import (
    WORKLOAD,
    admin,
    indexes,
    make_db,
    run_workload,
    tuning_cluster,  # noqa: F401 - a session fixture
)


@pytest.fixture(scope="module")
def cluster(tuning_cluster: int) -> int:  # noqa: F811 - the session's cluster under a short name
    """The port of the tuning tests' PostgreSQL 15 cluster."""
    return tuning_cluster


@pytest.fixture(scope="module")
def advised(cluster: int) -> tuple[DatabaseConfig, Any]:
    """The workload above on the schema above, analysed once."""
    db = make_db(cluster, "h7_tuning_advice")
    run_workload(db, WORKLOAD)
    return db, analyze(db, TuningSettings(only=("indexes",)))


def test_a_query_needing_a_single_column_index_gets_exactly_thatadvice_for(advised: tuple[DatabaseConfig, Any]) -> None:
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


def test_optimization_targets_choose_which_queries_get_advice(advised: tuple[DatabaseConfig, Any]) -> None:
    db, everything = advised
    only_events = analyze(db, TuningSettings(only=("indexes",), optimization_targets=["table:public.events"]))
    assert [(a.table, a.columns) for a in only_events.indexes] == [("events", ["a", "b"])]
    assert any(line.startswith("optimization_targets: 2 statements selected") for line in only_events.limits)
    [email] = [a for a in everything.indexes if a.table == "accounts"]
    by_id = analyze(db, TuningSettings(only=("indexes",), optimization_targets=[f"queryid:{email.queries[0].queryid}"]))
    assert [(a.table, a.columns) for a in by_id.indexes] == [("accounts", ["email"])]
    by_text = analyze(db, TuningSettings(only=("indexes",), optimization_targets=["query:select count(*) from events*"]))
    assert [(a.table, a.columns) for a in by_text.indexes] == [("events", ["a"])]  # the pair's query is not a target
    none = analyze(db, TuningSettings(only=("indexes",), optimization_targets=["table:no_such_table"]))
    assert none.indexes == [] and any("no statement matches the targets" in line for line in none.limits)


def test_a_well_indexed_workload_gets_no_indexadvice_for(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_indexed")
    with admin(cluster, db.dbname or "") as c:
        c.execute("CREATE INDEX ON accounts (email); CREATE INDEX ON events (a, b)")
    run_workload(db, [*WORKLOAD, ("SELECT count(*) FROM events", ())])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert report.workload["statements"] >= 5
    assert report.indexes == []


def test_hygiene_finds_duplicate_unused_invalid_fk_and_sequence(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_hygiene")
    with admin(cluster, db.dbname or "") as c:
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


def test_a_role_without_pg_read_all_stats_gets_limited_advice_with_the_reason(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_reader")
    with admin(cluster, db.dbname or "") as c:
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
    with admin(cluster, db.dbname or "") as c:  # the proposed statements run as printed
        for statement in view.statements:
            c.execute(statement)
        c.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(sql.Identifier(view.name)))
    [plan] = report.partitions
    assert (plan.table, plan.column, plan.interval) == ("events", "created_at", "week")
    assert 8 <= plan.partitions <= 12 and plan.pruning_share_percent > 0
    assert plan.statements[0].endswith('PARTITION BY RANGE ("created_at")')
    assert analyze(db, TuningSettings(only=("mviews", "partitions"))).mviews == []  # both off by default


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
    with admin(cluster, db.dbname or "") as c:
        c.execute("CREATE VIEW event_notes AS SELECT id, b, note FROM events")
    run_workload(db, [("SELECT id, note FROM event_notes WHERE b = %s", (4,))])
    assert analyze(db, TuningSettings(only=("indexes",))).indexes == []  # pglast alone: a view, no table
    with admin(cluster, db.dbname or "") as c:
        c.execute("CREATE EXTENSION pg_qualstats")
    run_workload(db, [("SELECT id, note FROM event_notes WHERE b = %s", (4,))])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert report.workload["qualstats_columns"] >= 1
    assert [(a.table, a.columns) for a in report.indexes] == [("events", ["b"])]
    assert report.indexes[0].queries[0].query == "SELECT id, note FROM event_notes WHERE b = $1"


def test_a_column_without_a_btree_operator_class_is_skipped_with_the_reason(cluster: int) -> None:
    db = make_db(cluster, "h7_tuning_box")
    with admin(cluster, db.dbname or "") as c:
        c.execute("CREATE TABLE shapes (id int, bx box); INSERT INTO shapes SELECT g, box(point(g, g), point(g + 1, g + 1))"
                  " FROM generate_series(1, 20000) g; ANALYZE shapes")
    run_workload(db, [("SELECT id FROM shapes WHERE bx = %s::box", ("(1,1),(2,2)",)), WORKLOAD[0]])
    report = analyze(db, TuningSettings(only=("indexes",)))
    assert [a.columns for a in report.indexes] == [["email"]]
    assert any(line.startswith("candidate shapes (bx) cannot be a B-tree index") for line in report.limits)
