"""Security audits through real worker processes: the audits queue, the diff with the last run stored in
history, the exporter's metrics, the CLI's HTML report, and no canary anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.procs import leak_haystack, run_cli
from tests.servers import CANARY

pytestmark = pytest.mark.fleet


def _failing(result: dict[str, Any]) -> list[str]:
    return sorted(f["check_id"] for f in result["findings"] if f["status"] == "fail")


def test_audit_runs_on_the_audits_queue_and_diffs_with_the_previous_run(fleet: Any) -> None:
    manager = fleet.manager()
    first = manager.execute_script("security_audit", "pg15").wait(timeout=120)
    second = manager.execute_script("security_audit", "pg15").wait(timeout=120)
    assert first["error"] is None and len(first["findings"]) >= 40
    assert second["diff"]["unchanged"] == _failing(first) == _failing(second)
    assert second["diff"]["new"] == [] and second["diff"]["fixed"] == []
    assert second["diff"]["previous"] == first["audited_at"]

    from engines.monitoring import alert_id
    from workers import runtime

    critical = [f["check_id"] for f in first["findings"] if f["status"] == "fail" and f["severity"] == "critical"]
    alert = runtime.alert_store().get(alert_id("security_audit_critical", "pg15"))
    if critical:  # a new critical finding raised the monitoring engine's alert, with the findings as values
        assert alert["state"] == "firing" and alert["values"] == {"critical_findings": critical}
        assert "alert: [FIRING] security_audit_critical on pg15" in fleet.procs["main"].text()
    else:
        assert alert is None
    runs = manager.get_script_history(script_type="security_audit", database_id="pg15", limit=2)
    assert [r["queue"] for r in runs] == ["audits", "audits"] and runs[0]["status"] == "succeeded"
    assert runs[0]["summary"]["score"] == second["score"]

    from workers.exporter import build_registry

    samples = {(s.name, s.labels.get("database"), s.labels.get("severity")): s.value
               for fam in text_string_to_metric_families(generate_latest(build_registry()).decode())
               for s in fam.samples}
    for severity, n in second["counts"]["fail"].items():
        assert samples[("dbfleet_audit_findings", "pg15", severity)] == n
        assert samples[("dbfleet_audit_new_findings", "pg15", severity)] == 0
    assert samples[("dbfleet_audit_score_percent", "pg15", None)] == second["score"]


def test_cli_audit_through_a_worker_writes_html_and_exits_by_severity(fleet: Any) -> None:
    out_file = fleet.root / "pg15-audit.html"
    out = run_cli(["audit", "pg15", "--format", "html", "-o", str(out_file), "--fail-on", "critical"], fleet.env)
    page = out_file.read_text()
    assert "Security audit of pg15" in page and "Failing (" in page
    critical = "pg.hba_trust_host" in page.split("Passing (")[0]
    assert out.returncode == (1 if critical else 0), out.stderr
    out = run_cli(["audit", "pg15", "--exclude", "pg.nosuch"], fleet.env)
    assert out.returncode == 2 and "pg.nosuch" in out.stderr


def test_audit_of_a_canary_account_leaks_nothing(fleet: Any) -> None:
    manager = fleet.manager()
    result = manager.execute_script("security_audit", "maria").wait(timeout=120)
    assert result["error"] is None and len(result["findings"]) >= 12
    down = manager.execute_script("security_audit", "pg18_badpw")
    failed = down.wait(timeout=120)  # like a health check of a down database: a result saying why
    assert failed["findings"] == [] and "password authentication failed" in failed["error"]
    assert manager.get_script_history(database_id="pg18_badpw", limit=1)[0]["status"] == "failed"
    haystack = {"results": json.dumps([result, failed]), **leak_haystack(fleet)}
    for where, text in haystack.items():
        assert CANARY not in text, f"canary password leaked into {where}"
    assert "security_audit" in haystack["history"]
