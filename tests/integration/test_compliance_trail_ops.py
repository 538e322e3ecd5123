"""Every dbfleet operation lands in the hash-chained trail: a real health check and a real backup of a
PostgreSQL 15 database, run through the worker bookkeeping (run_recorded), are appended with no secret in
them; then the history database is tampered with (a trail entry edited, deleted, two reordered, a history
row edited) and `dbfleet compliance trail verify` names the first broken link each time."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
TRAIL_KEY, REPO_KEY = "h17-ops-trail-key-0123456789", "h17-ops-repo-key-0123456789"


@pytest.fixture
def ops_fleet(fresh_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require("postgresql15")
    monkeypatch.setenv("H17_OPS_TRAIL", TRAIL_KEY)
    monkeypatch.setenv("H17_OPS_REPO", REPO_KEY)
    history = tmp_path / "h17_ops_history.db"
    # PostgreSQL on 5432 trusts local connections: the canary password is sent, never needed, never recorded
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{history}"}}
storage: {{repo: {{type: filesystem, path: "{tmp_path / 'repo'}", key_env: H17_OPS_REPO}}}}
databases:
  pg: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: postgres, password_env: DBFLEET_TEST_CANARY}}
database_scripts:
  compliance: {{trail_key_env: H17_OPS_TRAIL}}
""")
    yield history


def _run(script: str, call: Any) -> dict[str, Any]:
    from workers.common import Run, run_recorded

    return run_recorded(Run(f"local-{uuid.uuid4()}", script, "pg", {}, queue="local", worker="h17-test", local=True),
                        call)


def _verify() -> Any:
    from workers.cli import cli

    return CliRunner().invoke(cli, ["compliance", "trail", "verify"])


def test_real_operations_are_chained_and_any_tampering_is_named(ops_fleet: Path) -> None:
    from workers.backups import do_backup
    from workers.health import _health

    health = _run("health_check", _health)
    assert health["status"] != "down"
    backup = _run("backup", lambda db, opts: do_backup(db, opts))
    assert backup.get("backup_id")
    with sqlite3.connect(ops_fleet) as conn:
        rows = conn.execute("SELECT seq, action, database_id, details FROM dbfleet_compliance_trail ORDER BY seq").fetchall()
        dump = "\n".join(str(r) for r in conn.execute("SELECT * FROM dbfleet_compliance_trail"))
    assert [r[1] for r in rows] == ["run.running", "run.succeeded", "run.running", "run.succeeded"]
    assert {r[2] for r in rows} == {"pg"} and '"script_type":"backup"' in rows[3][3]
    assert CANARY not in dump and REPO_KEY not in dump and TRAIL_KEY not in dump
    assert backup["backup_id"] not in rows[3][3]  # the summary is bound by its HMAC, not copied
    ok = _verify()
    assert ok.exit_code == 0 and "trail intact: 4 entries" in ok.output and "2 history rows match" in ok.output

    def tampered(stmt: str, params: tuple[Any, ...] = ()) -> Any:
        with sqlite3.connect(ops_fleet) as conn:
            saved = conn.execute("SELECT * FROM dbfleet_compliance_trail ORDER BY seq").fetchall()
            conn.execute(stmt, params)
        out = _verify()
        with sqlite3.connect(ops_fleet) as conn:  # put the chain back for the next case
            conn.execute("DELETE FROM dbfleet_compliance_trail")
            conn.executemany("INSERT INTO dbfleet_compliance_trail VALUES (?, ?, ?, ?, ?, ?, ?, ?)", saved)
        assert _verify().exit_code == 0
        return out

    edited = tampered("UPDATE dbfleet_compliance_trail SET details = replace(details, 'succeeded', 'failed')"
                      " WHERE seq = 2")
    assert edited.exit_code == 1 and "broken at entry 2" in edited.output and "edited" in edited.output
    deleted = tampered("DELETE FROM dbfleet_compliance_trail WHERE seq = 3")
    assert deleted.exit_code == 1 and "broken at entry 3" in deleted.output and "deleted" in deleted.output
    # reordered: entries 2 and 3 swap places, each with its own HMAC
    with sqlite3.connect(ops_fleet) as conn:
        two, three = (conn.execute("SELECT at, action, database_id, actor, details, prev_mac, mac FROM"
                                   " dbfleet_compliance_trail WHERE seq = ?", (n,)).fetchone() for n in (2, 3))
    swap = ("UPDATE dbfleet_compliance_trail SET at=?, action=?, database_id=?, actor=?, details=?, prev_mac=?, mac=?"
            " WHERE seq = ?")
    with sqlite3.connect(ops_fleet) as conn:
        saved = conn.execute("SELECT * FROM dbfleet_compliance_trail ORDER BY seq").fetchall()
        conn.execute(swap, (*three, 2))
        conn.execute(swap, (*two, 3))
    reordered = _verify()
    assert reordered.exit_code == 1 and "broken at entry 2" in reordered.output
    with sqlite3.connect(ops_fleet) as conn:
        conn.execute("DELETE FROM dbfleet_compliance_trail")
        conn.executemany("INSERT INTO dbfleet_compliance_trail VALUES (?, ?, ?, ?, ?, ?, ?, ?)", saved)
    # the history rows themselves: a failed backup rewritten as a success is caught against its trail entry
    with sqlite3.connect(ops_fleet) as conn:
        conn.execute("UPDATE dbfleet_script_runs SET summary = '{\"backup_id\": \"forged\"}'"
                     " WHERE script_type = 'backup'")
    forged = _verify()
    assert forged.exit_code == 1 and "history row local-" in forged.output and "summary_mac" in forged.output
