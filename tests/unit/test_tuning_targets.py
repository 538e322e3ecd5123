"""``optimization_targets``: parsed, validated with a clear error, and selecting statements."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engines.config import TuningSection
from engines.errors import ConfigError
from engines.tuning import tuning_settings
from engines.tuning.targets import BadTarget, parse_targets

EVENTS = {("public", "events")}


def test_selectors_are_alternatives_and_latency_narrows_them() -> None:
    t = parse_targets(["table:events", "queryid:-42", "query:*from accounts where email*", "mean_ms>=10"])
    assert t.selects("1", "SELECT 1 FROM events", EVENTS, calls=10, total_ms=200.0)
    assert not t.selects("1", "SELECT 1 FROM events", EVENTS, calls=10, total_ms=50.0)  # 5 ms mean < 10
    assert t.selects("-42", "SELECT 2", set(), calls=1, total_ms=11.0)
    assert t.selects("7", "SELECT id  FROM Accounts\n WHERE email = $1", set(), calls=1, total_ms=11.0)
    assert not t.selects("7", "SELECT id FROM orders", {("public", "orders")}, calls=1, total_ms=99.0)


def test_a_schema_qualified_table_matches_only_that_schema() -> None:
    t = parse_targets(["table:shop.orders"])
    assert t.selects("1", "", {("shop", "orders")}, 1, 1.0)
    assert not t.selects("1", "", {("public", "orders")}, 1, 1.0)
    assert parse_targets(["table:orders"]).selects("1", "", {("public", "orders")}, 1, 1.0)


def test_no_target_selects_everything_and_a_latency_alone_filters_the_whole_workload() -> None:
    assert parse_targets([]).empty and parse_targets(None).selects("1", "x", set(), 1, 0.0)
    slow = parse_targets(["mean_ms >= 2.5"])
    assert slow.selects("1", "x", set(), 2, 6.0) and not slow.selects("1", "x", set(), 2, 4.0)


@pytest.mark.parametrize(("bad", "says"), [
    (["orders"], "expected one of table:"),
    (["index:orders"], "unknown kind 'index'"),
    (["queryid:abc"], "a queryid is an integer"),
    (["table:"], "expected one of"),
    (["mean_ms>=0"], "above 0 ms"),
    ([""], "not a non-empty string"),
    ([3], "not a non-empty string"),
])
def test_bad_targets_are_refused_with_the_accepted_forms(bad: list[object], says: str) -> None:
    with pytest.raises(BadTarget, match=says):
        parse_targets(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="optimization_targets"):
        tuning_settings({"optimization_targets": bad}, {})


def test_the_config_section_refuses_a_bad_target_at_load_time() -> None:
    with pytest.raises(ValidationError, match=r"optimization_targets\[0\] 'latency<5'"):
        TuningSection.model_validate({"optimization_targets": ["latency<5"]})
    ok = TuningSection.model_validate({"optimization_targets": ["table:public.play_events", "mean_ms>=20"]})
    assert tuning_settings(ok.model_dump(), {}).optimization_targets == ["table:public.play_events", "mean_ms>=20"]


def test_a_run_option_may_narrow_the_targets_as_one_string() -> None:
    settings = tuning_settings({"optimization_targets": ["table:a"]}, {"optimization_targets": "queryid:5"})
    assert settings.optimization_targets == ["queryid:5"]


def test_an_apply_converts_tables_only_when_the_run_names_the_partitions_area() -> None:
    assert tuning_settings({}, {"only": "indexes,partitions"}).apply_partitions
    assert not tuning_settings({}, {}).apply_partitions  # every area by default: no conversion
    assert not tuning_settings({}, {"apply_partitions": True}).apply_partitions  # not a run option


def test_the_change_table_names_what_each_change_touched() -> None:
    from engines.tuning.base import Change, TuningReport
    from workers.cli_tune import _evidence, _target

    report = TuningReport("db", "postgresql")
    report.changes = [
        Change("partition_table", "db", {"schema": "public", "table": "plays", "column": "played_at",
                                         "interval": "week"}, "kept", {"rows": 12000, "batches": 8, "state": "swapped"},
               {"action": "unpartition"}),
        Change("create_index", "db", {"index": "t_a_idx"}, "rolled_back",
               {"cost_before": 10, "cost_after": 9, "savings_percent": 10.0, "time_savings_percent": 3.1}, {})]
    part, index = report.to_dict()["changes"]
    assert _target(part) == "public.plays by played_at per week"
    assert _evidence(part["evidence"]) == "12000 rows in 8 batches, swapped"
    assert _target(index) == "t_a_idx" and _evidence(index["evidence"]) == "cost 10 -> 9 (10.0%); measured time -3.1%"
