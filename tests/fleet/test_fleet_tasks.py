"""Scripts through real worker processes: results, history, errors, the CLI, app-code signatures."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from engines.errors import ConfigError, UnknownDatabaseError, UnknownScriptError
from tests.fleet.procs import run_cli

pytestmark = pytest.mark.fleet
UP = ("up", "degraded")  # reachable


def test_health_check_runs_on_a_worker_and_is_recorded(fleet) -> None:
    from workers.manager import ScriptType

    run = fleet.manager().execute_script(ScriptType.HEALTH_CHECK, "pg18")
    result = run.wait(timeout=60)
    # reachable; a real warning (say a cold cache hit ratio) may make it "degraded": test_health_deep covers verdicts
    assert result["status"] in UP and result["server"]["version"].startswith("18.")
    row = fleet.manager().get_script_history(database_id="pg18", limit=5)[0]
    assert row["id"] == run.task_id and row["status"] == "succeeded"
    assert row["worker"].startswith("main@") and row["queue"] == "health"
    assert row["summary"]["status"] == result["status"]


def test_awaitable_facade(fleet) -> None:
    import asyncio

    async def main() -> tuple[Any, list]:
        manager = fleet.manager()
        result = await manager.execute_script("health_check", "lite")  # an OperationResult since issue 15
        rows = await manager.get_script_history(script_type="health_check", database_id="lite", limit=1)
        return result, rows

    result, rows = asyncio.run(main())
    assert result.status == "succeeded" and result.payload["status"] == "up" and result.payload["kind"] == "sqlite"
    assert rows[0].database_id == "lite" and rows[0].task_id == result.task_id


def test_documented_signature_from_application_code(fleet) -> None:
    code = ("from workers.health import check\n"
            "r = check.delay('pg15')\n"
            "print(r.get(timeout=60)['server']['version'])\n")
    out = subprocess.run([sys.executable, "-c", code], env=fleet.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("15.")


def test_cli_run_wait_prints_the_result_table(fleet) -> None:
    out = run_cli(["run", "health-check", "maria", "--wait"], fleet.env)
    assert out.returncode == 0, out.stderr
    assert re.search(r"maria \(mysql\): (up|degraded)", out.stdout)
    assert "MariaDB" in out.stdout and "response_time" in out.stdout


def test_cli_run_down_database_exits_non_zero(fleet) -> None:
    out = run_cli(["run", "health-check", "ghost", "--wait"], fleet.env)
    assert out.returncode == 1
    assert "ghost (postgresql): down" in out.stdout and "Connection refused" in out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["run", "health-check", "nope"], "unknown database id 'nope'"),
    (["run", "defragment", "pg18"], "unknown script type 'defragment'"),
    (["run", "health-check", "pg18", "--set", "password=x"], "secrets cannot travel"),
    (["history", "--since", "yesterday-ish"], "--since"),
])
def test_cli_bad_input_is_a_clear_error(fleet, args: list[str], message: str) -> None:
    out = run_cli(args, fleet.env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_client_side_refusals_are_recorded(fleet) -> None:
    manager = fleet.manager()
    with pytest.raises(UnknownDatabaseError):
        manager.execute_script("health_check", "missing_db")
    with pytest.raises(UnknownScriptError):
        manager.execute_script("vacuum_everything", "pg18")
    with pytest.raises(ConfigError):
        manager.execute_script("health_check", "pg18", {"api_key": "k"})
    rows = manager.get_script_history(database_id="missing_db", limit=1)
    assert rows[0]["status"] == "failed" and "UnknownDatabaseError" in rows[0]["error"]


def test_unknown_id_on_the_worker_fails_cleanly_and_the_worker_lives(fleet) -> None:
    res = fleet.app.send_task("health.check", args=["not_in_registry"], queue="health")
    res.get(timeout=60, propagate=False)
    assert res.state == "FAILURE"
    assert "UnknownDatabaseError: unknown database id 'not_in_registry'" in str(res.result)
    row = fleet.manager().get_script_history(database_id="not_in_registry", limit=1)[0]
    assert row["id"] == res.id and row["status"] == "failed"
    after = fleet.manager().execute_script("health_check", "lite").wait(timeout=60)
    assert after["status"] == "up"


def test_missing_password_env_on_the_worker(fleet) -> None:
    run = fleet.manager().execute_script("health_check", "nopw")
    result = run.wait(timeout=60)
    assert result["status"] == "down"
    assert "DBFLEET_UNSET_PASSWORD_VAR" in result["error"] and "export it on every worker" in result["error"]
    row = fleet.manager().get_script_history(database_id="nopw", limit=1)[0]
    assert row["status"] == "failed" and "DBFLEET_UNSET_PASSWORD_VAR" in row["error"]


def test_cli_history_and_status(fleet) -> None:
    fleet.manager().execute_script("health_check", "lite").wait(timeout=60)
    out = run_cli(["history", "--db", "lite", "--limit", "3"], fleet.env)
    assert out.returncode == 0 and "health_check" in out.stdout and "lite" in out.stdout
    out = run_cli(["status"], fleet.env)
    assert out.returncode == 0, out.stderr
    assert "main@" in out.stdout and "health" in out.stdout and "tuning" in out.stdout


def test_a_command_whose_queue_no_worker_serves_says_so_at_once(fleet) -> None:
    """The shared test fleet leaves the tuning queue unconsumed: `dbfleet tune` must not wait for nobody
    (told it may wait 600 s, it has to answer within run_cli's 120 s or the call raises)."""
    out = run_cli(["tune", "pg18", "--timeout", "600"], fleet.env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no worker serves the tuning queue: start `dbfleet worker --queues tuning` or use --local" in \
        " ".join(out.stderr.split())
    from workers.manager import DatabaseScriptManager

    rows = DatabaseScriptManager(fleet.app).get_script_history(script_type="performance_tuning", database_id="pg18")
    assert rows == []  # nothing was queued for a worker that does not exist
