"""The tuning engine's pure parts: the pglast reading of queries, candidate indexes, pgtune formulas."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from engines.errors import ConfigError
from engines.tuning import tuner_class, tuning_settings
from engines.tuning.pg_indexes import column_sets, covered
from engines.tuning.pg_plans import index_name
from engines.tuning.pg_settings import GB, MB, host_facts, pgtune, show
from engines.tuning.pg_workload import ExistingIndex
from engines.tuning.workload import Catalog, TableUse, UnsupportedQuery, shape

CAT = Catalog({("public", "orders"): ["id", "customer_id", "status", "created_at"],
               ("public", "customers"): ["id", "email", "country"],
               ("shop", "orders"): ["id", "sku"],
               ("public", 'we"ird;t'): ["id", "co;l"]})


def uses(sql: str) -> dict[str, TableUse]:
    return {f"{s}.{t}": u for (s, t), u in shape(sql, CAT).uses.items()}


def test_equality_range_join_and_order_columns_are_told_apart() -> None:
    got = uses("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.country = $1"
               " AND o.created_at > $2 ORDER BY o.status LIMIT $3")
    assert got["public.orders"] == TableUse(eq=[], range=["created_at"], join=["customer_id"], order=["status"])
    assert got["public.customers"] == TableUse(eq=["country"], range=[], join=["id"], order=[])


def test_in_lists_and_between_count_as_equality_and_range() -> None:
    got = uses("SELECT * FROM orders WHERE customer_id IN ($1, $2) AND created_at BETWEEN $3 AND $4")
    assert got["public.orders"] == TableUse(eq=["customer_id"], range=["created_at"])


def test_or_branches_functions_and_column_to_column_filters_give_no_candidate() -> None:
    got = uses("SELECT * FROM orders WHERE (status = $1 OR id = $2) AND lower(status) = $3 AND id = customer_id")
    assert got["public.orders"] == TableUse()


def test_schemas_follow_the_search_path_and_explicit_names() -> None:
    assert list(uses("SELECT * FROM shop.orders WHERE sku = $1")) == ["shop.orders"]
    assert uses("SELECT * FROM orders WHERE status = $1")["public.orders"].eq == ["status"]
    assert shape("SELECT * FROM orders WHERE status = $1", Catalog(CAT.columns, ("shop", "public"))).uses == {
        ("shop", "orders"): TableUse()}  # shop.orders has no status column: nothing to index


def test_correlated_subqueries_and_ctes_are_their_own_scopes() -> None:
    got = uses("WITH x AS (SELECT id FROM customers WHERE email = $1) SELECT * FROM orders o WHERE EXISTS"
               " (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.country = $2)")
    assert sorted(got["public.customers"].eq) == ["country", "email"] and got["public.customers"].join == ["id"]
    assert got["public.orders"].join == ["customer_id"]


def test_hostile_identifiers_parse_with_the_real_grammar() -> None:
    got = uses('SELECT id FROM "we""ird;t" WHERE "co;l" = $1')
    assert got['public.we"ird;t'].eq == ["co;l"]


@pytest.mark.parametrize("sql", ["CREATE TABLE t (x int)", "SELECT 1; SELECT 2", "SELEC nonsense", "VACUUM orders",
                                 "SELECT * INTO copy FROM orders WHERE id = $1"])
def test_statements_the_advisor_does_not_analyse_are_refused(sql: str) -> None:
    with pytest.raises(UnsupportedQuery):
        shape(sql, CAT)


def test_update_and_delete_where_clauses_are_read() -> None:
    assert uses("UPDATE orders SET status = $1 WHERE customer_id = $2")["public.orders"].eq == ["customer_id"]
    assert uses("DELETE FROM orders WHERE created_at < $1")["public.orders"].range == ["created_at"]
    assert shape("UPDATE orders SET status = $1 WHERE id = $2", CAT).params == 2


def test_composite_candidates_put_the_most_selective_equality_first_then_one_range_column() -> None:
    use = TableUse(eq=["status", "customer_id"], range=["created_at"])
    nd = {("public", "orders", "status"): 4.0, ("public", "orders", "customer_id"): 20000.0}
    sets = column_sets(("public", "orders"), use, nd, 3)
    assert ("customer_id", "status") in sets and ("customer_id", "status", "created_at") in sets
    assert ("status", "customer_id") not in sets
    assert {("customer_id",), ("status",), ("created_at",)} <= set(sets)


def test_a_candidate_that_is_an_existing_index_prefix_is_covered() -> None:
    existing = [ExistingIndex("public", "orders", "o_cs", ["customer_id", "status"])]
    assert covered(("public", "orders"), ("customer_id",), existing)
    assert covered(("public", "orders"), ("customer_id", "status"), existing)
    assert not covered(("public", "orders"), ("status",), existing)
    assert not covered(("public", "orders"), ("customer_id", "status", "id"), existing)


def test_index_names_fit_in_63_bytes_and_stay_distinct() -> None:
    a, b = index_name("t" * 60, ["a" * 30]), index_name("t" * 60, ["a" * 31])
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63 and a != b
    assert index_name("orders", ["customer_id"]) == "orders_customer_id_idx"


def test_pgtune_formulas_for_a_16gb_8cpu_oltp_host() -> None:
    got = {k: v for k, (v, _) in pgtune(16 * GB, 8, 100, "oltp", "ssd").items()}
    assert got["shared_buffers"] == 4 * GB and got["effective_cache_size"] == 12 * GB
    assert got["maintenance_work_mem"] == 1 * GB and got["wal_buffers"] == 16 * MB
    assert got["work_mem"] == (16 * GB - 4 * GB) // ((100 + 8) * 3) // 4 // MB * MB == 9 * MB  # whole MB
    assert got["random_page_cost"] == 1.1 and got["max_parallel_workers_per_gather"] == 4
    dw = {k: v for k, (v, _) in pgtune(16 * GB, 8, 100, "analytical_queries", "hdd").items()}
    assert dw["maintenance_work_mem"] == 2 * GB and dw["default_statistics_target"] == 500
    assert dw["random_page_cost"] == 4.0 and dw["work_mem"] < got["work_mem"]
    assert show(4 * GB, "8kB") == "4GB" and show(1.1, None) == "1.1"


def test_host_facts_come_from_config_or_this_machine_never_guessed_for_a_remote_host() -> None:
    assert host_facts("db.example.internal", {}) is None
    assert host_facts("db.example.internal", {"memory_bytes": 8 * GB, "cpus": 2})["storage"] == "ssd"
    local = host_facts("127.0.0.1", {})
    assert local is not None and local["memory_bytes"] > 0 and local["cpus"] >= 1


def test_run_options_overlay_the_section_and_unknown_areas_are_refused() -> None:
    s = tuning_settings({"min_cost_savings": 30, "optimize_for": "oltp", "analyze_queries": True},
                        {"only": "indexes,settings"})
    assert (s.min_cost_savings, s.optimize_for, s.only) == (30, "oltp", ("indexes", "settings"))
    with pytest.raises(ConfigError, match="unknown area"):
        tuning_settings({}, {"only": "indexes,magic"})
    with pytest.raises(ConfigError, match="no tuner for .sqlite.; known: postgresql, mysql, redis"):
        tuner_class("sqlite")


@pytest.mark.parametrize(("window", "hour", "inside"), [
    ("02:00-04:00", 3, True), ("02:00-04:00", 5, False), ("22:00-02:00", 23, True), ("22:00-02:00", 1, True),
    ("22:00-02:00", 12, False), (None, 12, True)])
def test_maintenance_window_including_one_that_wraps_midnight(window: str | None, hour: int, inside: bool) -> None:
    from workers.tuning import in_window

    assert in_window(window, datetime(2026, 1, 1, hour, 30, tzinfo=timezone.utc)) is inside


def _mysql_facts(**over: Any) -> dict[str, Any]:
    var = {"innodb_buffer_pool_size": 128 * MB, "innodb_log_file_size": 32 * MB, "max_connections": 100,
           "tmp_table_size": 16 * MB, "max_heap_table_size": 16 * MB, "table_open_cache": 2000,
           "slow_query_log": "ON", "long_query_time": 10}
    status = {"Max_used_connections": 10, "Created_tmp_disk_tables": 10, "Created_tmp_tables": 1000,
              "Open_tables": 100, "Opened_tables": 120}
    facts: dict[str, Any] = {"var": var, "status": status, "innodb_bytes": 64 * MB, "memory_bytes": None}
    for key, value in over.items():
        (var if key in var else status if key in status else facts)[key] = value
    return facts


def test_mysqltuner_rules_fire_on_their_condition_and_stay_quiet_otherwise() -> None:
    from engines.tuning.mysql import CHECKS

    def advice(facts: dict[str, Any]) -> dict[str, str]:
        return {a.name: a.advised for fn in CHECKS for a in fn(facts)}

    assert advice(_mysql_facts()) == {}
    assert advice(_mysql_facts(innodb_bytes=1024 * MB))["innodb_buffer_pool_size"] == "1126M"
    assert advice(_mysql_facts(innodb_bytes=1024 * MB, memory_bytes=512 * MB))["innodb_buffer_pool_size"] == "384M"
    spill = advice(_mysql_facts(Created_tmp_disk_tables=600))
    assert spill["tmp_table_size"] == spill["max_heap_table_size"] == "64M"
    assert advice(_mysql_facts(Max_used_connections=95))["max_connections"] == "142"
    assert advice(_mysql_facts(slow_query_log="OFF"))["slow_query_log"] == "ON"


def test_redis_rules_for_memory_and_persistence() -> None:
    from engines.tuning.redis import memory_advice, persistence_findings

    info = {"role": "master", "db0": {"keys": 1000, "expires": 950}}
    got = {a.name: a.advised for a in memory_advice(info, {"maxmemory": "0", "maxmemory-policy": "noeviction"}, None)}
    assert got == {"maxmemory": "75% of the host's RAM", "maxmemory-policy": "volatile-lru"}
    assert memory_advice({"role": "slave"}, {"maxmemory": "0"}, None) == []
    assert [f.check for f in persistence_findings(info, {"save": "", "appendonly": "no"})] == ["persistence"]
    assert persistence_findings(info, {"save": "3600 1", "appendonly": "no"}) == []
    assert "evicts any key" in persistence_findings(info, {"save": "", "appendonly": "yes",
                                                           "maxmemory-policy": "allkeys-lru"})[0].detail


def test_reports_render_hostile_text_escaped_in_html() -> None:
    from engines.tuning.base import IndexAdvice, QueryRef, TuningReport
    from workers.cli_tune import to_html

    report = TuningReport("db<1>", "postgresql", limits=["<script>alert(1)</script>"])
    report.indexes = [IndexAdvice("public", "t", ["a"], "t_a_idx", 'CREATE INDEX "<b>"', [QueryRef("1", "q", 1, 2, 1)],
                                  2.0, 1.0, None)]
    page = to_html(report.to_dict())
    assert "<script>" not in page and "&lt;script&gt;" in page and "db&lt;1&gt;" in page
    assert "<b>" not in page


def test_analysis_interval_becomes_a_cron_the_config_accepts() -> None:
    from engines.config import TuningSection
    from engines.tuning import analysis_cron

    assert analysis_cron("daily") == "0 4 * * *" and analysis_cron("weekly") == "0 4 * * 0"
    assert analysis_cron(TuningSection(analysis_interval="15 2 * * 1").analysis_interval) == "15 2 * * 1"
    with pytest.raises(ValueError, match="cron"):
        TuningSection(analysis_interval="hourly-ish")
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        TuningSection(maintenance_window="2am-4am")


def test_tuning_scripts_resolve_to_registered_tasks_on_the_tuning_queue() -> None:
    from workers.app import TASK_MODULES, app
    from workers.scripts import ScriptType, resolve

    assert "workers.tuning" in TASK_MODULES
    import workers.tuning  # noqa: F401 - registers the tasks

    for script, task in ((ScriptType.PERFORMANCE_TUNING, "tuning.analyze"),
                         ("performance_tuning_apply", "tuning.apply"), ("performance-tuning-revert", "tuning.revert"),
                         ("performance_tuning_refresh", "tuning.refresh_view")):
        name, task_name, queue = resolve(script)
        assert (task_name, queue) == (task, "tuning") and task_name in app.tasks


def test_a_run_option_cannot_turn_on_what_only_the_operator_may() -> None:
    s = tuning_settings({"apply_settings": "never"}, {"apply_settings": "reload_only", "apply_mviews": True})
    assert (s.apply_settings, s.apply_mviews) == ("never", False)
    assert tuning_settings({"apply_settings": "reload_only"}, {}).apply_settings == "reload_only"
