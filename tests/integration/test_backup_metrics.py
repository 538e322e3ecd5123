"""Backups and drills land in the exporter's metrics (through the real Redis cache)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from workers import runtime

pytestmark = pytest.mark.integration


def test_backup_and_drill_metrics(fresh_runtime: Path, embedded_redis: Any, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    (tmp_path / "key").write_text("k")
    fresh_runtime.write_text(yaml.safe_dump({
        "fleet": {"cache_url": f"{embedded_redis.url}/5", "history_url": f"sqlite:///{tmp_path / 'h.db'}"},
        "databases": {"app": {"kind": "sqlite", "path": str(tmp_path / "app.db")}},
        "storage": {"r": {"type": "filesystem", "path": str(tmp_path / "repo"), "key_file": str(tmp_path / "key")}}}))
    runtime.reset()
    from workers.backups import do_backup, do_drill
    from workers.exporter import build_registry

    db = runtime.config().database("app")
    backup, ok, _ = do_backup(db, {})
    drill, drill_ok, _ = do_drill(db, {})
    assert ok and drill_ok
    text = generate_latest(build_registry()).decode()
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("dbfleet_")}
    labels = '{database="app",kind="sqlite"}'
    assert lines[f"dbfleet_backup_last_size_bytes{labels}"] == backup["stats"]["total_bytes"]
    assert lines[f"dbfleet_backup_last_stored_bytes{labels}"] == backup["stats"]["stored_bytes"] > 0
    assert lines[f"dbfleet_restore_drill_success{labels}"] == 1.0
    assert lines[f"dbfleet_restore_drill_rto_seconds{labels}"] == drill["rto_seconds"]
