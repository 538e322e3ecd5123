"""One history bookkeeping for worker tasks and local runs: no exception leaves a run 'running'."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.errors import ScriptFailed, UnknownDatabaseError
from workers import runtime


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    path = tmp_path / "dbfleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": {"state_dir": str(tmp_path / "state")},
                                    "databases": {"app": {"kind": "sqlite", "path": str(tmp_path / "app.db")}}}))
    monkeypatch.setenv("DBFLEET_CONFIG", str(path))
    runtime.reset()
    yield path
    runtime.reset()


def _boom(*_: Any) -> Any:
    raise RuntimeError("driver exploded")


def _only_run(script: str) -> dict[str, Any]:
    runs = runtime.history().query(script)
    assert len(runs) == 1
    return runs[0]


def test_local_run_raising_an_unexpected_exception_ends_failed(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import backups
    from workers.cli_backups import _run_local

    monkeypatch.setitem(backups.OPERATIONS, "backup_verify", _boom)
    with pytest.raises(ScriptFailed, match="RuntimeError: driver exploded"):
        _run_local("backup_verify", "app", {})
    run = _only_run("backup_verify")  # was left 'running' forever
    assert run["status"] == "failed" and run["error"] == "RuntimeError: driver exploded"
    assert run["queue"] == "local" and run["finished_at"]


def test_local_run_keeps_dbfleet_errors_as_they_are_and_records_them(cfg: Path) -> None:
    from workers.cli_backups import _run_local

    with pytest.raises(UnknownDatabaseError):
        _run_local("backup_verify", "nope", {})
    assert _only_run("backup_verify")["status"] == "failed"


def test_ctrl_c_in_a_local_run_is_recorded_then_re_raised(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import backups
    from workers.cli_backups import _run_local

    def interrupted(*_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setitem(backups.OPERATIONS, "backup_verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run_local("backup_verify", "app", {})
    run = _only_run("backup_verify")
    assert run["status"] == "failed" and "interrupted" in run["error"]


def test_a_task_and_a_local_run_record_the_same_way(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import health

    monkeypatch.setattr(health, "_health", _boom)
    res = health.check.apply(args=["app"], task_id="same-way-1")
    assert isinstance(res.result, ScriptFailed) and "RuntimeError: driver exploded" in str(res.result)
    run = runtime.history().get("same-way-1")
    assert run is not None and run["status"] == "failed" and run["error"] == "RuntimeError: driver exploded"


def test_a_redelivered_copy_of_a_succeeded_task_returns_its_result_without_running_again(cfg: Path) -> None:
    from workers.common import Run, run_recorded

    calls: list[str] = []

    def engine(db: Any, options: dict[str, Any]) -> Any:
        calls.append(db.id)
        return {"database_id": db.id, "n": len(calls)}, True, None

    first = run_recorded(Run("task-1", "backup", "app", {}, queue="backups"), engine)
    again = run_recorded(Run("task-1", "backup", "app", {}, queue="backups"), engine)  # the broker's second copy
    assert first == again == {"database_id": "app", "n": 1} and calls == ["app"]
    assert _only_run("backup")["attempts"] == 1
    other = run_recorded(Run("task-2", "backup", "app", {}, queue="backups"), engine)  # a new task runs
    assert other["n"] == 2


def test_a_redelivered_copy_of_a_failed_task_runs_again(cfg: Path) -> None:
    from workers.common import Run, run_recorded

    outcomes = iter([({"database_id": "app"}, False, "dump failed"), ({"database_id": "app"}, True, None)])
    run_recorded(Run("task-3", "backup", "app", {}, queue="backups"), lambda db, o: next(outcomes))
    run_recorded(Run("task-3", "backup", "app", {}, queue="backups"), lambda db, o: next(outcomes))
    run = _only_run("backup")
    assert run["status"] == "succeeded" and run["attempts"] == 2
