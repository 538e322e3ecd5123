"""The DR surfaces over real clusters: dbfleet.yaml group -> CLI, a dr.* task, the documented async API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from engines.dr.coord import Coordinator
from tests.integration.test_dr_pg import PASSWORD_ENV, REPL_USER, Group, env, make_group, write_marker  # noqa: F401
from tests.servers import CANARY
from workers import runtime


def _yaml(group: Group, root: Path) -> Path:
    tree = {
        "fleet": {"cache_url": "redis://127.0.0.1:6379/9", "state_dir": str(root / "state2"),
                  "history_url": f"sqlite:///{root / 'state2' / 'history.db'}"},
        "databases": {c.name: {"kind": "postgresql", "host": "127.0.0.1", "port": c.port, "user": "postgres",
                               "dbname": "postgres", "connect_timeout": 2} for c in group.clusters.values()},
        "database_scripts": {"disaster_recovery": {
            "dr_id": group.ctx.dr_id, "replication_user": REPL_USER, "replication_password_env": PASSWORD_ENV,
            "primary_site": {"database": "p", "data_dir": str(group.primary.data)},
            "secondary_sites": [{"database": s.name, "data_dir": str(s.data)} for s in group.standbys]}},
    }
    path = root / "dbfleet.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_cli_task_and_emergency_api_on_a_configured_group(env: dict[str, object],  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    group = make_group(env)
    monkeypatch.setenv("DBFLEET_CONFIG", str(_yaml(group, env["root"])))  # type: ignore[arg-type]
    runtime.reset()
    coord = Coordinator(runtime.cache())
    try:
        from workers.cli import cli
        from workers.dr import observe
        from workers.dr_api import trigger_emergency_failover

        shown = CliRunner().invoke(cli, ["dr", "status"])
        assert shown.exit_code == 0 and "s1" in shown.output and "stand" in shown.output, shown.output
        result = observe.apply(args=[group.ctx.dr_id]).get()
        assert result["primary_reachable"] and result["failover"] is None
        by_member = observe.apply(args=["s1"], kwargs={"options": {}}).get()  # how execute_script sends it
        assert by_member["dr_id"] == group.ctx.dr_id
        event = asyncio.run(trigger_emergency_failover(group.ctx.dr_id, "Primary datacenter power failure"))
        assert event.status == "promoted" and event.new_primary == "s1" and event.fenced_sql
        write_marker(group.standbys[0], 1)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # never two primaries accepting writes
            write_marker(group.primary, 2)
        again = CliRunner().invoke(cli, ["dr", "failover"])
        assert again.exit_code == 1 and "refused" in again.output
        unknown = CliRunner().invoke(cli, ["dr", "status", "--group", "nope"])
        assert unknown.exit_code == 2 and "unknown DR group 'nope'" in unknown.output
        runs = runtime.history().query(limit=50)
        assert {"dr_observe", "dr_failover"} <= {r["script_type"] for r in runs}
        blob = json.dumps(runs, default=str) + json.dumps(coord.events(group.ctx.dr_id, 100))
        assert CANARY not in blob and CANARY not in shown.output + again.output
    finally:
        coord.forget(group.ctx.dr_id)
        runtime.reset()
