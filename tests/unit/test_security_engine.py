"""The security audit engine without servers: registry, scoring, diff, reports, versions, settings,
and the MongoDB/Elasticsearch checks against named fake clients (no server can run here)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from engines.errors import ConfigError
from engines.secrets import remember
from engines.security import audit_settings, checks_for, diff_findings, run_audit
from engines.security.engine import AUDITORS, run_check
from engines.security.model import FAIL, PASS, SEVERITIES, UNKNOWN, AuditReport, Finding
from engines.security.registry import Check, CheckSet, Unknowable, passed
from engines.security.report import to_html, to_json
from engines.security.versions import check_version
from tests.conftest import db


def test_every_kind_has_its_minimum_of_well_formed_checks() -> None:
    minimum = {"postgresql": 40, "mysql": 12, "redis": 8, "mongodb": 4, "elasticsearch": 4}
    prefixes = {"postgresql": "pg.", "mysql": "my.", "redis": "redis.", "mongodb": "mongo.", "elasticsearch": "es."}
    for kind in AUDITORS:
        checks = list(checks_for(kind))
        assert len(checks) >= minimum[kind], kind
        for c in checks:
            assert c.id.startswith(prefixes[kind]) and c.severity in SEVERITIES
            assert c.title and c.remediation, c.id


def test_duplicate_ids_and_bad_severities_are_refused() -> None:
    checks = CheckSet("x")
    checks.add(Check("x.a", "t", "low", "r", lambda p: passed()))
    with pytest.raises(ValueError, match="duplicate"):
        checks.add(Check("x.a", "t", "low", "r", lambda p: passed()))
    with pytest.raises(ValueError, match="severity"):
        checks.add(Check("x.b", "t", "urgent", "r", lambda p: passed()))


def _finding(cid: str, status: str, severity: str = "high", **evidence: Any) -> Finding:
    return Finding(cid, f"title of {cid}", severity, status, evidence, "fix it")


def _report(findings: list[Finding]) -> AuditReport:
    return AuditReport("db1", "postgresql", "18.6", "2026-11-25T00:00:00+00:00", 12.0, findings)


def test_score_weights_severity_and_ignores_unknown() -> None:
    report = _report([_finding("a", PASS, "critical"), _finding("b", FAIL, "high"), _finding("c", UNKNOWN, "critical"),
                      _finding("d", FAIL, "info")])
    assert report.score == round(100 * 10 / 15, 1)
    assert report.counts()[FAIL] == {"critical": 0, "high": 1, "medium": 0, "low": 0, "info": 1}
    assert [f.check_id for f in report.failing("high")] == ["b"]
    assert _report([]).score == 0.0


def test_json_schema_is_stable_and_round_trips() -> None:
    report = _report([_finding("a", FAIL, ports=[1, 2])])
    data = json.loads(to_json(report))
    assert set(data) == {"audited_at", "counts", "database_id", "diff", "duration_ms", "error", "excluded",
                         "findings", "kind", "schema_version", "score", "server_version", "user"}
    assert set(data["findings"][0]) == {"check_id", "cis", "evidence", "reason", "remediation", "severity",
                                        "status", "title"}
    assert AuditReport.from_dict(data).to_dict() == report.to_dict()


def test_diff_new_fixed_unchanged_unknown() -> None:
    before = [f.__dict__ for f in [_finding("a", FAIL), _finding("b", FAIL), _finding("c", PASS),
                                   _finding("d", FAIL)]]
    now = [_finding("a", FAIL), _finding("b", PASS), _finding("c", FAIL), _finding("d", UNKNOWN)]
    assert diff_findings(before, now, "T0") == {"new": ["c"], "fixed": ["b"], "unchanged": ["a"], "unknown": ["d"],
                                                "previous": "T0"}
    first = diff_findings(None, now)
    assert first["new"] == ["a", "c"] and first["previous"] is None


def test_html_is_self_contained_and_escapes_everything() -> None:
    hostile = '<script>alert("x")</script>'
    report = _report([_finding("pg.x", FAIL, tables=[hostile]), _finding("pg.y", PASS)])
    report.diff = {"new": ["pg.x"], "fixed": [], "unchanged": [], "unknown": [], "previous": "<b>T0</b>"}
    page = to_html(report)
    assert hostile not in page and "&lt;script&gt;" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert "Failing (1)" in page and "Passing (1)" in page and "fix it" in page and "&lt;b&gt;T0" in page


def test_version_check_behind_current_ahead_eol_and_unknown() -> None:
    today = date(2026, 11, 25)
    assert check_version("postgresql", "15.19", 1, today).status == FAIL
    assert check_version("postgresql", "15.20", 1, today).status == PASS
    assert check_version("postgresql", "15.21", 1, today).status == PASS  # newer than the data file
    eol = check_version("postgresql", "13.23", 1, today)
    assert eol.status == FAIL and eol.evidence["end_of_life"] == "2025-11-13"
    assert check_version("mariadb", "10.11.19-MariaDB-0+deb12u1", 2, today).status == PASS
    with pytest.raises(Unknowable, match="no release data"):
        check_version("postgresql", "99.1", 1, today)
    with pytest.raises(Unknowable, match="version number"):
        check_version("redis", "unstable", 2, today)


def test_settings_merge_excludes_and_prefers_the_specific() -> None:
    target = db("m", kind="pg", host="h", options={"security_audit": {"exclude": ["pg.ssl"],
                                                                      "expected_superusers": ["admin"]}})
    merged = audit_settings(target, {"exclude": ["pg.fsync"], "expected_superusers": ["postgres"]},
                            {"exclude": ["pg.archive_mode"]})
    assert merged["exclude"] == ["pg.archive_mode", "pg.fsync", "pg.ssl"]
    assert merged["expected_superusers"] == ["admin"]


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no security checks for 'sqlite'"):
        run_audit(db("lite", kind="sqlite", path="/x.db"))
    with pytest.raises(ConfigError, match="pg.nosuch.*audit-checks postgresql"):
        run_audit(db("p", kind="pg", host="h"), {"exclude": ["pg.nosuch"]})


def test_a_check_that_raises_is_unknown_with_a_scrubbed_reason() -> None:
    secret = "s3cr3t-in-an-error-message"
    remember(secret)

    def boom(probe: Any) -> Any:
        raise RuntimeError(f"password={secret} rejected")

    finding = run_check(Check("x.boom", "t", "high", "r", boom), None)
    assert finding.status == UNKNOWN and secret not in finding.reason and "RuntimeError" in finding.reason


class MockAdminDb:
    """A mock of pymongo's admin database: canned answers to buildInfo and getCmdLineOpts."""

    def __init__(self, parsed: dict[str, Any] | None, version: str) -> None:
        self.parsed, self.version = parsed, version

    def command(self, name: str) -> dict[str, Any]:
        if name == "buildInfo":
            return {"version": self.version}
        if self.parsed is None:
            raise PermissionError("not authorized on admin to execute command getCmdLineOpts")
        return {"parsed": self.parsed}


class MockMongoClient:
    """A mock MongoClient (no MongoDB server can run here); real runs: tests/integration."""

    def __init__(self, parsed: dict[str, Any] | None, version: str = "8.0.4") -> None:
        self.admin = MockAdminDb(parsed, version)


class MockConnector:
    """Stands in for a connector around a mock client: ``conn`` and the context manager protocol."""

    def __init__(self, client: Any) -> None:
        self.conn = client

    def __enter__(self) -> MockConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _mongo(client: MockMongoClient) -> AuditReport:
    return run_audit(db("mongo", kind="mongodb", host="h"), factory=lambda _db: MockConnector(client))  # type: ignore[arg-type,return-value]


def test_mongodb_checks_on_a_mock_client() -> None:
    open_ = _mongo(MockMongoClient({"net": {"bindIpAll": True}, "security": {}}))
    assert {f.check_id: f.status for f in open_.findings if f.check_id != "mongo.version_current"} == {
        "mongo.authorization": FAIL, "mongo.bind_all": FAIL, "mongo.tls": FAIL, "mongo.javascript": FAIL}
    locked = _mongo(MockMongoClient({"net": {"bindIp": "127.0.0.1,10.0.0.5", "tls": {"mode": "requireTLS"}},
                                     "security": {"authorization": "enabled", "javascriptEnabled": False}}))
    assert all(f.status == PASS for f in locked.findings if f.check_id != "mongo.version_current")
    denied = _mongo(MockMongoClient(None))
    assert denied.finding("mongo.authorization").status == UNKNOWN
    assert "not authorized" in denied.finding("mongo.authorization").reason


class MockEs:
    """A mock Elasticsearch client (no server can run here); real runs: tests/integration."""

    def __init__(self, security: bool, settings: dict[str, Any]) -> None:
        self._security, self._settings = security, settings
        self.xpack = self
        self.nodes = self

    def info(self, **kw: Any) -> dict[str, Any]:
        if kw:  # nodes.info(metric="settings", flat_settings=True)
            return {"nodes": {"n1": {"settings": self._settings}}}
        return {"version": {"number": "8.19.3"}}


def _es(client: MockEs) -> AuditReport:
    client.xpack = type("X", (), {"info": lambda self: {"features": {"security": {"enabled": client._security}}}})()
    return run_audit(db("es", kind="elasticsearch", host="h"),
                     factory=lambda _db: MockConnector(client))  # type: ignore[arg-type,return-value]


def test_elasticsearch_checks_on_a_mock_client() -> None:
    wide = _es(MockEs(False, {"network.host": "0.0.0.0"}))
    for cid in ("es.security_enabled", "es.anonymous_access", "es.bind_all", "es.tls_http"):
        assert wide.finding(cid).status == FAIL, cid
    tight = _es(MockEs(True, {"network.host": "10.0.0.4", "xpack.security.http.ssl.enabled": "true"}))
    for cid in ("es.security_enabled", "es.anonymous_access", "es.bind_all", "es.tls_http"):
        assert tight.finding(cid).status == PASS, cid


class MockRedisProbe:
    """Just the ACL category lookup the command-rule evaluator needs."""

    def category(self, name: str) -> set[str]:
        return {"dangerous": {"flushall", "config", "debug", "keys"}, "read": {"get", "keys"}}[name]


@pytest.mark.parametrize("rules, command, expected", [
    ("+@all", "flushall", True), ("+@all -@dangerous", "flushall", False), ("+@all -@dangerous", "get", True),
    ("-@all +get", "keys", False), ("+@read", "keys", True), ("+@read -keys", "keys", False),
    ("+@all -@dangerous +config", "config", True), ("allcommands -debug", "debug", False), ("", "get", False),
])
def test_redis_acl_rules_are_evaluated_in_order(rules: str, command: str, expected: bool) -> None:
    from engines.security.redis import allowed

    assert allowed(MockRedisProbe(), rules, command) is expected  # type: ignore[arg-type]
