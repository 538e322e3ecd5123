"""The hash-chained trail: intact chains verify; an edited, deleted or reordered entry is caught and named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from engines.compliance.trail import AuditTrail

KEY = b"h8-trail-key-0123456789abcdef"


def _trail(tmp_path: Path, n: int = 5) -> tuple[AuditTrail, Path]:
    path = tmp_path / "h8_history.db"
    trail = AuditTrail(f"sqlite:///{path}", KEY)
    for i in range(n):
        trail.append("compliance.scan", f"db{i}", {"pii_columns": i})
    return trail, path


def _sql(path: Path, stmt: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(stmt)


def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    trail, _ = _trail(tmp_path)
    result = trail.verify()
    assert result["ok"] and result["entries"] == 5 and result["first_broken"] is None


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    trail, path = _trail(tmp_path)
    _sql(path, "UPDATE dbfleet_compliance_trail SET details = '{\"pii_columns\":0}' WHERE seq = 3")
    result = trail.verify()
    assert not result["ok"] and result["first_broken"] == 3 and "edited" in result["problem"]


def test_a_deleted_entry_is_named(tmp_path: Path) -> None:
    trail, path = _trail(tmp_path)
    _sql(path, "DELETE FROM dbfleet_compliance_trail WHERE seq = 2")
    result = trail.verify()
    assert not result["ok"] and result["first_broken"] == 2 and "missing" in result["problem"]


def test_reordered_entries_are_caught(tmp_path: Path) -> None:
    trail, path = _trail(tmp_path)
    with sqlite3.connect(path) as conn:  # swap the content (and HMACs) of entries 2 and 4
        rows = {r[0]: r[1:] for r in conn.execute("SELECT seq, at, action, database_id, actor, details, prev_mac, mac"
                                                  " FROM dbfleet_compliance_trail WHERE seq IN (2, 4)")}
        for seq, other in ((2, 4), (4, 2)):
            conn.execute("UPDATE dbfleet_compliance_trail SET at=?, action=?, database_id=?, actor=?, details=?,"
                         " prev_mac=?, mac=? WHERE seq=?", (*rows[other], seq))
    result = trail.verify()
    assert not result["ok"] and result["first_broken"] == 2


def test_a_cut_tail_is_caught_by_the_exported_anchor(tmp_path: Path) -> None:
    trail, path = _trail(tmp_path)
    anchor = trail.head()
    _sql(path, "DELETE FROM dbfleet_compliance_trail WHERE seq = 5")
    assert trail.verify()["ok"]  # a cut tail leaves a valid shorter chain ...
    result = trail.verify(anchor)
    assert not result["ok"] and "anchor" in result["problem"]  # ... that the anchor exposes


def test_a_wrong_key_fails_the_first_entry(tmp_path: Path) -> None:
    _, path = _trail(tmp_path)
    result = AuditTrail(f"sqlite:///{path}", b"another-key-0123456789abcdef").verify()
    assert result["first_broken"] == 1


def test_cli_trail_verify_exits_1_naming_the_broken_entry(tmp_path: Path, fresh_runtime: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.cli import cli

    history = tmp_path / "h8_cli_history.db"
    monkeypatch.setenv("H8_TRAIL_KEY", KEY.decode())
    fresh_runtime.write_text(f"fleet: {{history_url: 'sqlite:///{history}'}}\n"
                             "database_scripts: {compliance: {trail_key_env: H8_TRAIL_KEY}}\n")
    trail = AuditTrail(f"sqlite:///{history}", KEY)
    for i in range(3):
        trail.append("compliance.erase", "music", {"affected": {"users": i}})
    ok = CliRunner().invoke(cli, ["compliance", "trail", "verify"])
    assert ok.exit_code == 0 and "trail intact: 3 entries" in ok.output
    _sql(history, "UPDATE dbfleet_compliance_trail SET database_id = 'other' WHERE seq = 2")
    bad = CliRunner().invoke(cli, ["compliance", "trail", "verify"])
    assert bad.exit_code == 1 and "broken at entry 2" in bad.output


def test_an_anchor_exported_to_the_backup_storage_catches_a_cut_tail(tmp_path: Path, fresh_runtime: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.cli import cli

    history = tmp_path / "h8_anchor_history.db"
    monkeypatch.setenv("H8_TRAIL_KEY", KEY.decode())
    fresh_runtime.write_text(f"fleet: {{history_url: 'sqlite:///{history}'}}\n"
                             f"storage: {{repo: {{type: filesystem, path: '{tmp_path / 'repo'}'}}}}\n"
                             "database_scripts: {compliance: {trail_key_env: H8_TRAIL_KEY}}\n")
    trail = AuditTrail(f"sqlite:///{history}", KEY)
    for i in range(4):
        trail.append("compliance.scan", "music", {"n": i})
    exported = CliRunner().invoke(cli, ["compliance", "trail", "export-anchor"])
    assert exported.exit_code == 0 and "anchor of entry 4" in exported.output
    assert list((tmp_path / "repo" / "compliance" / "trail-anchors").iterdir())
    _sql(history, "DELETE FROM dbfleet_compliance_trail WHERE seq = 4")
    assert CliRunner().invoke(cli, ["compliance", "trail", "verify"]).exit_code == 0  # the chain alone looks fine
    cut = CliRunner().invoke(cli, ["compliance", "trail", "verify", "--repository-anchor"])
    assert cut.exit_code == 1 and "anchor" in cut.output


# --- every history row goes to the trail (the HistoryStore hook) ------------------------------------------

def _recording_store(tmp_path: Path) -> tuple[object, AuditTrail, Path]:
    from engines.compliance.trail import HistoryRecorder
    from engines.history import HistoryStore

    path = tmp_path / "h17_hist.db"
    url = f"sqlite:///{path}"
    return HistoryStore(url, recorder=HistoryRecorder(url, lambda: KEY)), AuditTrail(url, KEY), path


def test_every_history_write_is_appended_without_its_content(tmp_path: Path) -> None:
    from engines.compliance.trail import check_history

    store, trail, _ = _recording_store(tmp_path)
    store.start("r1", "compliance_erase", "music", {"subject": "users.email=ann@example.org"}, queue="compliance")
    store.finish("r1", "succeeded", summary={"affected": {"users": 1}, "note": "ann@example.org"})
    store.record_failure("r2", "backup", "music", "IntegrityError: Key (email)=(bob@example.org) exists")
    entries = trail.entries()
    assert [e["action"] for e in entries] == ["run.running", "run.succeeded", "run.failed"]
    assert entries[1]["details"]["run_id"] == "r1" and entries[1]["database_id"] == "music"
    assert entries[0]["details"]["option_keys"] == ["subject"]
    with sqlite3.connect(tmp_path / "h17_hist.db") as conn:  # the subject, the summary, the error: none of it
        text = "\n".join(str(r) for r in conn.execute("SELECT * FROM dbfleet_compliance_trail"))
    assert "example.org" not in text and "IntegrityError" not in text
    assert trail.verify()["ok"] and check_history(trail, store.query())["ok"]  # type: ignore[attr-defined]


def test_a_history_row_edited_or_deleted_after_it_was_recorded_is_named(tmp_path: Path) -> None:
    from engines.compliance.trail import check_history

    store, trail, path = _recording_store(tmp_path)
    for i in range(3):
        store.start(f"r{i}", "backup", "music", {}, queue="backups")
        store.finish(f"r{i}", "succeeded", summary={"bytes": 100 + i})
    _sql(path, "UPDATE dbfleet_script_runs SET status = 'failed' WHERE id = 'r1'")
    _sql(path, "DELETE FROM dbfleet_script_runs WHERE id = 'r2'")
    result = check_history(trail, store.query())  # type: ignore[attr-defined]
    problems = {p["run_id"]: p["problem"] for p in result["problems"]}
    assert not result["ok"] and "edited" in problems["r1"] and "status" in problems["r1"]
    assert "deleted from history" in problems["r2"] and "r0" not in problems
    assert trail.verify()["ok"]  # the chain itself is intact: the history rows moved, not the trail


def test_a_failing_recorder_never_fails_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from engines.compliance.trail import HistoryRecorder
    from engines.history import HistoryStore

    def no_key() -> bytes:
        raise RuntimeError("compliance trail key is not configured")

    url = f"sqlite:///{tmp_path / 'h17_nokey.db'}"
    store = HistoryStore(url, recorder=HistoryRecorder(url, no_key))
    store.start("r1", "backup", "music", {})
    store.finish("r1", "succeeded", summary={})
    assert store.get("r1")["status"] == "succeeded"  # type: ignore[index]
    assert "not appended to the audit trail" in caplog.text and "trail key is not configured" in caplog.text


def test_the_runtime_history_store_records_to_the_trail_only_with_a_trail_key(
        tmp_path: Path, fresh_runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import runtime

    fresh_runtime.write_text(f"fleet: {{history_url: 'sqlite:///{tmp_path / 'h17_rt.db'}'}}\n")
    assert runtime.history().recorder is None
    monkeypatch.setenv("H17_TRAIL_KEY", KEY.decode())
    fresh_runtime.write_text(f"fleet: {{history_url: 'sqlite:///{tmp_path / 'h17_rt.db'}'}}\n"
                             "database_scripts: {compliance: {trail_key_env: H17_TRAIL_KEY}}\n")
    runtime.reset()
    runtime.history().start("x", "health_check", "music", {})
    assert AuditTrail(f"sqlite:///{tmp_path / 'h17_rt.db'}", KEY).head()["entries"] == 1


# --- the daily anchor export (beat) ----------------------------------------------------------------------

def test_beat_exports_the_anchor_daily_on_the_compliance_queue_when_a_trail_key_is_set() -> None:
    from beat_schedule import build_beat_schedule
    from engines.config import parse_config

    entries = build_beat_schedule(parse_config("database_scripts: {compliance: {trail_key_env: X}}"))
    anchor = entries["compliance_trail_anchor"]
    assert anchor["task"] == "compliance.export_anchor" and anchor["options"] == {"queue": "compliance"}
    assert anchor["schedule"].hour == {0} and anchor["schedule"].minute == {30}
    assert "compliance_trail_anchor" not in build_beat_schedule(parse_config("{}"))  # no key: nothing to anchor
    off = "database_scripts: {compliance: {trail_key_env: X, anchor_schedule: null}}"
    assert "compliance_trail_anchor" not in build_beat_schedule(parse_config(off))


def test_the_anchor_task_exports_the_head_and_verify_checks_against_it(
        tmp_path: Path, fresh_runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    history = tmp_path / "h17_anchor.db"
    monkeypatch.setenv("H17_TRAIL_KEY", KEY.decode())
    fresh_runtime.write_text(f"fleet: {{history_url: 'sqlite:///{history}'}}\n"
                             f"storage: {{repo: {{type: filesystem, path: '{tmp_path / 'repo'}'}}}}\n"
                             "database_scripts: {compliance: {trail_key_env: H17_TRAIL_KEY}}\n")
    from workers.cli import cli
    from workers.compliance import export_anchor

    trail = AuditTrail(f"sqlite:///{history}", KEY)
    for i in range(3):
        trail.append("compliance.scan", "music", {"n": i})
    out = export_anchor.apply().get()  # the beat entry's task, run in this process
    # 3 entries + the export's own run.running row
    assert out["seq"] == 4 and out["key"].startswith("compliance/trail-anchors/")
    ok = CliRunner().invoke(cli, ["compliance", "trail", "verify", "--repository-anchor"])
    assert ok.exit_code == 0, ok.output
    assert [e["action"] for e in trail.entries()][-2:] == ["run.running", "run.succeeded"]  # the export is a run too
    _sql(history, "DELETE FROM dbfleet_compliance_trail WHERE seq >= 3")
    cut = CliRunner().invoke(cli, ["compliance", "trail", "verify", "--repository-anchor"])
    assert cut.exit_code == 1 and "anchor" in cut.output
