"""Monitoring through real worker processes: a health check fires a rule, the alert is in the shared store,
the exporter shows alerts, task telemetry and workers online, and the API acknowledges the alert."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.conftest import API_TOKEN
from tests.fleet.procs import wait_for
from tests.servers import CANARY, CANARY_WRONG

pytestmark = pytest.mark.fleet


def test_health_check_fires_a_rule_visible_in_exporter_and_api(fleet: Any) -> None:
    from workers import runtime
    from workers.api import create_api
    from workers.exporter import build_registry

    result = fleet.manager().execute_script("health_check", "pg18").wait(timeout=60)
    assert result["status"] != "down", [c for c in result["checks"] if c["status"] != "ok"]  # warnings are real
    assert {c["check"] for c in result["checks"]} >= {"connections", "long_running_queries", "query_performance"}
    fired = [t for t in result["alerts"] if t["rule"] == "pg18_has_clients"]
    if fired:  # the first health check of pg18 in this session: it fires here (for: 0s)
        assert fired[0]["to"] == "firing" and fired[0]["values"]["connections"] > 0
    active = {a["rule"]: a for a in runtime.alert_store().active()}
    assert active["pg18_has_clients"]["state"] == "firing"
    wait_for(lambda: "alert: [FIRING] pg18_has_clients on pg18" in fleet.procs["main"].text(), 30,
             "the log channel's message in the worker log")

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(build_registry()).decode())
               for s in fam.samples}
    assert samples[("dbfleet_alerts", (("severity", "info"), ("state", "firing")))] >= 1
    assert samples[("dbfleet_tasks_total", (("queue", "health"), ("state", "SUCCESS"), ("task", "health.check")))] >= 1
    assert samples[("dbfleet_task_duration_seconds_count", (("queue", "health"), ("task", "health.check")))] >= 1
    assert samples[("dbfleet_workers_online", ())] >= 1
    assert samples[("dbfleet_health_check_status", (("check", "connections"), ("database", "pg18"),
                                                    ("kind", "postgresql")))] == 0

    api = TestClient(create_api(), headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert TestClient(api.app).post(f"/api/monitoring/alerts/{active['pg18_has_clients']['id']}/acknowledge",
                                    json={"by": "no-token"}).status_code == 401
    aid = active["pg18_has_clients"]["id"]
    assert api.post(f"/api/monitoring/alerts/{aid}/acknowledge", json={"by": "fleet-test"}).status_code == 200
    again = fleet.manager().execute_script("health_check", "pg18").wait(timeout=60)
    assert not [t for t in again["alerts"] if t["rule"] == "pg18_has_clients"]  # still firing, no transition
    assert runtime.alert_store().get(aid)["acknowledged_by"] == "fleet-test"


def test_no_canary_in_api_answers_or_metrics(fleet: Any) -> None:
    """pg18's password is the canary and pg18_badpw's the wrong canary: neither reaches the API or /metrics,
    even from the health report of a failed login."""
    from workers.api import create_api
    from workers.exporter import build_registry

    for db_id in ("pg18", "pg18_badpw"):
        fleet.manager().execute_script("health_check", db_id).wait(timeout=60)
    api = TestClient(create_api(), headers={"Authorization": f"Bearer {API_TOKEN}"})
    answers = [api.get(path) for path in (
        "/api/monitoring/databases", "/api/monitoring/databases/pg18/health", "/api/monitoring/databases/pg18/metrics",
        "/api/monitoring/databases/pg18_badpw/health", "/api/monitoring/alerts/active", "/openapi.json")]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert api.get("/api/monitoring/databases/pg18_badpw/health").json()["status"] == "down"
    haystack = "\n".join(a.text for a in answers) + generate_latest(build_registry()).decode()
    assert CANARY not in haystack and CANARY_WRONG not in haystack
