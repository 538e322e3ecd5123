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
