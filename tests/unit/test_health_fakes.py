"""MongoDB and Elasticsearch deep health checks against named mock clients (no server can run here;
tests/integration runs them against real servers when a URL is given), and the check frame itself."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engines.health.deep import CannotCheck, HealthChecks, HealthContext
from tests.conftest import db


class MockMongoAdmin:
    """A mock of pymongo's admin database with canned serverStatus / replSetGetStatus answers."""

    def __init__(self, lag_seconds: float) -> None:
        self.lag = lag_seconds

    def command(self, name: str) -> dict[str, Any]:
        if name == "serverStatus":
            return {"connections": {"current": 90, "available": 10}}
        now = datetime(2026, 11, 25, 12, 0)
        return {"members": [{"stateStr": "PRIMARY", "optimeDate": now},
                            {"stateStr": "SECONDARY", "optimeDate": now - timedelta(seconds=self.lag)}]}


class MockConn:
    def __init__(self, client: Any) -> None:
        self.conn = client


def test_mongodb_checks_on_a_mock() -> None:
    from engines.health.mongodb import CHECKS

    client = type("MockMongoClient", (), {"admin": MockMongoAdmin(400)})()
    results = {r.check: r for r in CHECKS.run(HealthContext(MockConn(client), db("m", kind="mongodb", host="h")))}
    assert results["connections"].value == 90.0 and results["connections"].status == "warning"
    assert results["replication_lag"].value == 400 and results["replication_lag"].status == "critical"


class MockEs:
    """A mock Elasticsearch client: a yellow cluster, one node at 90 % heap and 50 % disk."""

    def __init__(self) -> None:
        self.cluster, self.nodes = self, self

    def health(self) -> dict[str, Any]:
        return {"status": "yellow", "unassigned_shards": 3}

    def stats(self, metric: str) -> dict[str, Any]:
        node = {"jvm": {"mem": {"heap_used_percent": 90}},
                "fs": {"total": {"total_in_bytes": 100, "available_in_bytes": 50}}}
        return {"nodes": {"n1": node}}


def test_elasticsearch_checks_on_a_mock() -> None:
    from engines.health.elasticsearch import CHECKS

    results = {r.check: r for r in CHECKS.run(HealthContext(MockConn(MockEs()), db("e", kind="es", host="h")))}
    assert results["cluster_status"].status == "warning" and results["unassigned_shards"].value == 3
    assert results["heap"].status == "warning" and results["disk"].value == 50.0 and results["disk"].status == "ok"


def test_a_check_that_cannot_run_is_unknown_and_the_rest_still_run() -> None:
    checks = HealthChecks()

    @checks.check("needs_extension")
    def _missing(ctx: HealthContext) -> Any:
        raise CannotCheck("CREATE EXTENSION something first")

    @checks.check("broken")
    def _broken(ctx: HealthContext) -> Any:
        raise ZeroDivisionError("division by zero")

    @checks.check("fine")
    def _fine(ctx: HealthContext) -> Any:
        from engines.health.deep import result

        return result("fine", 1.0, "%", 5, 10, "never shown")

    out = {r.check: r for r in checks.run(HealthContext(None, db("x", kind="pg", host="h")))}
    assert out["needs_extension"].status == "unknown" and out["needs_extension"].hint == "CREATE EXTENSION something first"
    assert out["broken"].status == "unknown" and "ZeroDivisionError" in out["broken"].hint
    assert out["fine"].status == "ok" and out["fine"].hint is None


def test_counter_deltas_survive_in_memory_and_reset_on_restart() -> None:
    ctx = HealthContext(None, db("x", kind="pg", host="h"))
    assert ctx.delta("c", 10) is None and ctx.delta("c", 15) == 5
    assert ctx.delta("c", 3) is None  # the server restarted: counters went back
    again = HealthContext(None, db("x", kind="pg", host="h"), memory=ctx.memory)
    assert again.delta("c", 4) == 1
