"""The alert rule language (fuzzed with hypothesis) and the alert state machine on a real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.config import parse_config
from engines.errors import ConfigError
from engines.monitoring import AlertStore, Evaluator, RuleError, compile_rules, parse, parse_duration
from engines.monitoring.metrics import from_report, known_metrics

UNITS = known_metrics()


def test_the_seeds_rules_parse_and_evaluate() -> None:
    rule = parse("avg_response_time > 50ms", UNITS)
    assert rule.evaluate({"avg_response_time": 73.0}) is True and rule.evaluate({"avg_response_time": 12}) is False
    both = parse("cpu_usage > 75% AND connections > 80%", UNITS)
    assert both.evaluate({"cpu_usage": 80, "connections": 90}) is True
    assert both.evaluate({"cpu_usage": 80, "connections": 10}) is False


@pytest.mark.parametrize("expr, metrics, expected", [
    ("replication_lag > 2m", {"replication_lag": 121}, True),       # 2m = 120 s for a metric in seconds
    ("avg_response_time > 2s", {"avg_response_time": 1999}, False),  # 2 s = 2000 ms for a metric in ms
    ("database_size >= 1GB", {"database_size": 1024 ** 3}, True),
    ("NOT (blocked_queries == 0)", {"blocked_queries": 2}, True),
    ("up == 0 OR critical_checks > 0", {"up": 1, "critical_checks": 0}, False),
    ("(connections > 90% OR cpu_usage > 90%) AND up == 1", {"connections": 95, "up": 1}, True),
    ("connections > 90% OR cpu_usage > 90%", {"connections": 95}, True),   # OR: one true side is enough
    ("connections > 90% AND cpu_usage > 90%", {"connections": 95}, None),  # no cpu data: unknown, never fires
    ("NOT cpu_usage > 90%", {}, None),
])
def test_units_precedence_and_missing_data(expr: str, metrics: dict[str, float], expected: bool | None) -> None:
    assert parse(expr, UNITS).evaluate(metrics) is expected


@pytest.mark.parametrize("expr, message, position", [
    ("cpu_usage > 75% AND active_users > 1000000", "unknown metric 'active_users'", 20),
    ("avg_response_time > 50%", "does not compare", 20),
    ("avg_response_time >", "expected a number", 19),
    ("(connections > 1", "expected ')'", 16),
    ("connections > 1 connections > 2", "expected AND, OR", 16),
    ("__import__('os').system('id')", "unexpected character", 11),
    ("", "empty rule", 0),
])
def test_errors_name_the_position(expr: str, message: str, position: int) -> None:
    with pytest.raises(RuleError) as info:
        parse(expr, UNITS)
    assert message in info.value.message and info.value.position == position
    assert info.value.caret().splitlines()[1].index("^") == position


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdeonrtu_ ()<>=!%0123456789.msKMGB\"'")) | st.characters(),
               max_size=80))
def test_fuzzed_text_only_ever_raises_a_rule_error(text: str) -> None:
    try:
        node = parse(text, UNITS)
    except RuleError:
        return
    assert node.evaluate({}) in (True, False, None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(UNITS)), min_size=1, max_size=6), st.lists(st.sampled_from(
    ["AND", "OR", "AND NOT"]), min_size=5, max_size=5), st.floats(0, 1e6, allow_nan=False))
def test_generated_valid_rules_parse(names: list[str], ops: list[str], number: float) -> None:
    parts = [f"{n} >= {number:.3f}" for n in names]
    text = parts[0] + "".join(f" {ops[i % 5]} {p}" for i, p in enumerate(parts[1:]))
    parse(text, UNITS)


def test_durations() -> None:
    assert parse_duration("2m") == 120 and parse_duration("500ms") == 0.5 and parse_duration(30) == 30
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_config_load_reports_rule_errors_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("database_scripts:\n  monitoring:\n    alert_rules:\n"
                     "      - {name: busy, expr: 'cpu_usage > 75% AND active_users > 1000000'}\n")
    assert "alert_rules[0] (busy): unknown metric 'active_users'" in str(info.value)
    assert "position 21" in str(info.value)
    with pytest.raises(ConfigError, match="no monitoring.slack.music-ops"):
        parse_config("database_scripts:\n  monitoring:\n    alert_channels: ['slack:music-ops']\n")
    with pytest.raises(ConfigError, match="unknown type 'sms'"):
        parse_config("database_scripts:\n  monitoring:\n    alert_channels: ['sms:+1555']\n")


def _report(db: str = "music", **values: float) -> dict[str, Any]:
    checks = [{"check": k, "status": "ok", "value": v, "unit": "%" if k in ("connections",) else "ms"}
              for k, v in values.items()]
    return {"database_id": db, "status": "up", "checks": checks}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Evaluator, Clock, list[tuple[str, Any]], AlertStore]:
    cfg = parse_config("database_scripts:\n  monitoring:\n    repeat_interval: 10m\n    alert_channels: [log]\n"
                       "    alert_rules:\n      - {name: slow, expr: 'avg_response_time > 50ms', for: 2m}\n")
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    sent: list[tuple[str, Any]] = []
    clock = Clock()
    ev = Evaluator(store, compile_rules(cfg.database_scripts.monitoring),
                   notify=lambda out: sent.extend(out.items()), clock=clock)
    return ev, clock, sent, store


def test_pending_firing_repeat_ack_resolved(setup: Any, tmp_path: Path) -> None:
    ev, clock, sent, store = setup
    assert [t["to"] for t in ev.evaluate(_report(response_time=80))] == ["pending"]
    clock.tick(60)
    assert ev.evaluate(_report(response_time=90)) == [] and sent == []       # held 1 of 2 minutes
    clock.tick(61)
    assert [t["to"] for t in ev.evaluate(_report(response_time=95))] == ["firing"]
    assert len(sent) == 1 and sent[0][1].alerts[0]["values"] == {"avg_response_time": 95.0}
    clock.tick(300)
    ev.evaluate(_report(response_time=95))
    assert len(sent) == 1                                                     # de-duplicated until repeat_interval
    clock.tick(301)
    ev.evaluate(_report(response_time=95))
    assert len(sent) == 2                                                     # repeated after 10 minutes
    alert = store.active()[0]
    store.acknowledge(alert["id"], "ana", "looking", clock())
    clock.tick(3600)
    ev.evaluate(_report(response_time=95))
    assert len(sent) == 2                                                     # acknowledged: no more repeats
    # state survives a restart: a new evaluator on the same database file carries on
    again = Evaluator(AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}"), ev.rules,
                      notify=lambda out: sent.extend(out.items()), clock=clock)
    assert [t["to"] for t in again.evaluate(_report(response_time=10))] == ["resolved"]
    assert len(sent) == 3 and sent[2][1].status == "resolved" and store.active() == []
    assert store.get(alert["id"])["acknowledged"] is False                    # an ack ends with the alert


def test_pending_that_clears_never_notifies_and_silences_mute(setup: Any) -> None:
    ev, clock, sent, store = setup
    ev.evaluate(_report(response_time=80))
    clock.tick(30)
    assert [t["to"] for t in ev.evaluate(_report(response_time=10))] == []  # pending forgotten quietly
    assert store.active() == [] and sent == []
    store.silence("slow", None, clock() + timedelta(hours=1), "ana", "maintenance")
    ev.evaluate(_report(response_time=80))
    clock.tick(130)
    assert [t["to"] for t in ev.evaluate(_report(response_time=80))] == ["firing"] and sent == []
    clock.tick(3600)  # the silence expired: the firing alert is announced now
    ev.evaluate(_report(response_time=80))
    assert len(sent) == 1


def test_one_alert_per_rule_and_database_and_grouping_per_channel(tmp_path: Path) -> None:
    cfg = parse_config("database_scripts:\n  monitoring:\n    alert_channels: [log]\n    alert_rules:\n"
                       "      - {name: slow, expr: 'avg_response_time > 50ms'}\n"
                       "      - {name: busy, expr: 'connections > 80%'}\n")
    sent: list[tuple[str, Any]] = []
    ev = Evaluator(AlertStore(f"sqlite:///{tmp_path / 'a.db'}"), compile_rules(cfg.database_scripts.monitoring),
                   notify=lambda out: sent.extend(out.items()))
    ev.evaluate(_report("a", response_time=80, connections=90))
    ev.evaluate(_report("b", response_time=80))
    assert [(c, sorted(x["rule"] for x in n.alerts)) for c, n in sent] == [("log", ["busy", "slow"]), ("log", ["slow"])]
    assert len(ev.store.active()) == 3


def test_acknowledge_errors(setup: Any) -> None:
    _, clock, _, store = setup
    with pytest.raises(KeyError):
        store.acknowledge("nope", None, None, clock())


def test_metrics_from_a_report() -> None:
    m = from_report({"status": "down", "checks": [{"check": "reachability", "status": "critical", "value": False},
                                                  {"check": "memory", "status": "ok", "value": 123, "unit": "bytes"}]})
    assert m["up"] == 0.0 and m["critical_checks"] == 1.0 and "memory" not in m  # memory is a percent metric
