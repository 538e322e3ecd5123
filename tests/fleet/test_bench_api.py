"""Benchmarks as an API, run as a user would: the async calls start a private fleet (embedded PostgreSQL 18,
Redis, a real `dbfleet worker`), generate the music database, send every setting through the worker and time
the field's tool beside it; `dbfleet bench` prints the table. Tiny sizes: this checks the plumbing and the
report, not speed (no timing is asserted)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engines.errors import ConfigError

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bench directory for the module: its PostgreSQL is initialised and its music database generated once."""
    return tmp_path_factory.mktemp("bench")


def test_backup_benchmark_sweeps_levels_and_encryption_beside_pg_dump(bench_dir: Path) -> None:
    tmp_path = bench_dir
    from workers.bench import run_backup_benchmark

    report = asyncio.run(run_backup_benchmark(database_sizes=[1_000], compression_levels=[3],
                                              encryption_enabled=[True, False], directory=tmp_path))
    cells = report["cells"]
    assert [(c["setting"]["level"], c["setting"]["encryption"]) for c in cells] == [(3, True), (3, False)]
    for c in cells:
        assert c["seconds"] > 0 and c["tool_seconds"] > 0 and c["ratio"] > 0
        assert c["tool"].startswith("pg_dump -Fc -Z")
        assert c["stored_bytes"] > 0 and c["tool_bytes"] > 0 and c["rows"] >= 1_000
        assert c["extra"]["backup_id"]  # a real backup, made by the worker
    assert len({c["extra"]["backup_id"] for c in cells}) == 2
    assert Path(report["json_path"]).exists() and Path(report["chart_path"]).read_text().startswith("<svg")
    # the backups are in the repositories the sweep made: encrypted ones hold key slots, plain ones do not
    repos = tmp_path / "repos"
    assert any((repos / "enc_1000_z3" / "keys").iterdir())
    assert not (repos / "plain_1000_z3" / "keys").exists() or not any((repos / "plain_1000_z3" / "keys").iterdir())
    password = (tmp_path / "secrets" / "postgres.password").read_text().strip()
    for text in (json.dumps(report), (tmp_path / "worker.log").read_text(errors="replace")):
        assert password not in text


def test_migration_benchmark_through_the_cli_and_the_api_refuses_bad_grids(bench_dir: Path) -> None:
    tmp_path = bench_dir
    out = subprocess.run([sys.executable, "-m", "workers.cli", "bench", "migration", "--size", "1000",
                          "--parallel", "1,2", "--batch-sizes", "500", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env={"COLUMNS": "100", **_env()})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "migration through the fleet vs pg_dump | psql" in out.stdout
    assert "workers" in out.stdout and "batch" in out.stdout
    report = json.loads(next((tmp_path / "reports").glob("migration-*.json")).read_text())
    assert [c["setting"]["parallel_workers"] for c in report["cells"]] == [1, 2]
    assert all(c["extra"]["validation"] == "passed" for c in report["cells"])
    assert all(c["tool_seconds"] > 0 for c in report["cells"])

    from workers.bench import run_migration_benchmark

    with pytest.raises(ConfigError, match="parallel_workers"):
        asyncio.run(run_migration_benchmark(source_size=1_000, parallel_workers=[0], directory=tmp_path))
    bad = subprocess.run([sys.executable, "-m", "workers.cli", "bench", "backup", "--sizes", "ten"],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert bad.returncode == 2 and "--sizes" in bad.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DBFLEET_CONFIG"}
