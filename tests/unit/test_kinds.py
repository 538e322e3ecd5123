"""The kinds registry: every path imports (or names its install), the config accepts exactly its kinds,
beat schedules only what a kind supports, ``dbfleet kinds`` shows the matrix, and no import cycles
remain between the health modules or the audit/backup CLI modules."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engines import kinds
from engines.config import Config, DatabaseConfig, parse_config
from engines.errors import ConfigError, DriverMissingError
from engines.kinds import CAPABILITIES, KIND_ALIASES, KINDS, Kind, import_path, load

ROOT = Path(__file__).resolve().parents[2]
ROWS = [(k.name, c) for k in KINDS.values() for c in CAPABILITIES if k.path(c)]


@pytest.mark.parametrize("kind,capability", ROWS, ids=[f"{k}-{c}" for k, c in ROWS])
def test_every_registered_path_imports_or_names_its_install(kind: str, capability: str) -> None:
    row = KINDS[kind]
    try:
        obj = load(kind, capability)
    except DriverMissingError as exc:  # an optional driver absent here: the message says what to install
        assert row.driver is not None and f"dbfleet[{row.driver[1]}]" in str(exc)
        return
    expected = {"connector": "Connector", "dumper": "Dumper", "source": None, "target": None}.get(capability)
    if expected:
        assert expected in [c.__name__ for c in obj.__mro__] and obj.kind == kind
    elif capability == "health":
        assert type(obj).__name__ == "HealthChecks" and obj.checks
    elif capability == "auditor":
        assert obj.CHECKS and callable(obj.open_probe)
    else:
        assert isinstance(obj, type)


def test_a_missing_optional_driver_becomes_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def import_module(name: str) -> Any:
        missing = "h5_fake_driver" if name == "with_driver" else "h5_other"
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(kinds.importlib, "import_module", import_module)
    with pytest.raises(DriverMissingError, match=r"h5-fake-driver is not installed: pip install 'dbfleet\[h5x\]'"):
        import_path("with_driver:Cls", ("h5_fake_driver", "h5x"))
    with pytest.raises(ModuleNotFoundError, match="h5_other"):  # any other missing module is a real bug: raised as is
        import_path("without:Cls", ("h5_fake_driver", "h5x"))


def test_config_accepts_exactly_the_registry_kinds_and_aliases() -> None:
    for alias, kind in KIND_ALIASES.items():
        entry = DatabaseConfig.model_validate({"kind": alias.upper(), "host": "h", "path": "/tmp/h5.db"})
        assert entry.kind == kind and KINDS[kind]  # every accepted kind has a row
        assert entry.port == KINDS[kind].default_port
    with pytest.raises(ValueError, match="unknown kind 'oracle'; known: clickhouse, elasticsearch"):
        DatabaseConfig.model_validate({"kind": "oracle", "host": "h"})


def test_no_alias_names_two_kinds() -> None:
    spellings = [a for k in KINDS.values() for a in (k.name, *k.aliases)]
    assert len(spellings) == len(set(spellings)) == len(KIND_ALIASES)
    assert all(a == a.lower() for a in spellings) and all(name == row.name for name, row in KINDS.items())


def test_a_kind_without_a_capability_says_which_kinds_have_it() -> None:
    with pytest.raises(ConfigError, match="no audit for 'clickhouse'; known: postgresql, mysql"):
        load("clickhouse", "auditor")
    with pytest.raises(ConfigError, match="unknown kind 'db2'"):
        load("db2", "connector")


def _fleet(monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Config:
    """A config with one kind of each shape, including a registered kind that has no capability at all."""
    monkeypatch.setitem(KINDS, "h5nothing", Kind("h5nothing", (), 1))
    monkeypatch.setitem(KIND_ALIASES, "h5nothing", "h5nothing")
    return parse_config(
        "databases:\n  music: {kind: pg, host: h}\n  olap: {kind: clickhouse, host: h}\n"
        "  lite: {kind: sqlite, path: /tmp/x.db}\n  bare: {kind: h5nothing, host: h}\n" + extra
        + "database_scripts:\n  backup: {schedule: '0 3 * * *'}\n")


def test_beat_schedules_only_what_each_kind_supports(monkeypatch: pytest.MonkeyPatch) -> None:
    from beat_schedule import build_beat_schedule

    entries = build_beat_schedule(_fleet(monkeypatch))
    by_db: dict[str, set[str]] = {}
    for name in entries:
        script, db_id = name.split(":")[:2]
        by_db.setdefault(db_id, set()).add(script)
    assert by_db["music"] >= {"health_check", "backup", "security_audit"}
    assert "health_check" in by_db["olap"] and "backup" in by_db["olap"] and "security_audit" not in by_db["olap"]
    assert "security_audit" not in by_db["lite"] and "health_check" in by_db["lite"]
    assert "bare" not in by_db  # no connector: no health check; no dumper: no backup; no auditor: no audit


def test_an_explicit_schedule_the_kind_cannot_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from beat_schedule import build_beat_schedule

    cfg = _fleet(monkeypatch, "schedules:\n  olap-audit: {script: security_audit, database: olap, cron: '0 4 * * 0'}\n")
    with pytest.raises(ConfigError, match="security_audit cannot run on 'olap': clickhouse has no audit"):
        build_beat_schedule(cfg)


def test_dbfleet_kinds_prints_the_matrix_as_a_table_and_json() -> None:
    from workers.cli import cli

    table = CliRunner().invoke(cli, ["kinds"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    for name in KINDS:
        assert name in table.output
    assert "migrate into" in table.output and "basic + deep" in table.output
    out = CliRunner().invoke(cli, ["kinds", "--format", "json"])
    rows = {r["kind"]: r for r in json.loads(out.output)}
    assert set(rows) == set(KINDS)
    assert rows["clickhouse"]["dumper"] == "engines.backup.dumpers.clickhouse:ClickHouseDumper"
    assert rows["clickhouse"]["auditor"] is None and rows["postgresql"]["aliases"] == ["postgres", "pg"]
    assert rows["sqlite"]["health"] is None and rows["sqlite"]["basic_health"] is True


ROUND_TRIP_FILES = ("tests/integration/test_backup_roundtrip.py", "tests/integration/test_backup_external.py")
TEST_NAME = {"mysql": "mariadb"}  # the kind's round trip runs against MariaDB here


def test_every_kind_with_a_dumper_has_a_round_trip_test() -> None:
    defined = {node.name for f in ROUND_TRIP_FILES for node in ast.walk(ast.parse((ROOT / f).read_text()))
               if isinstance(node, ast.FunctionDef)}
    missing = [k for k in kinds.kinds_with("dumper") if f"test_{TEST_NAME.get(k, k)}_round_trip" not in defined]
    assert not missing, f"kinds with a dumper but no round-trip test: {missing} (docs/adding-a-kind.md step 9)"


def _imports(path: Path, package_root: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("a,b", [("engines.health.basic", "engines.health.deep"),
                                 ("workers.cli_audit", "workers.cli_backups")])
def test_no_import_cycle(a: str, b: str) -> None:
    def file(mod: str) -> Path:
        return ROOT / (mod.replace(".", "/") + ".py")

    a_to_b, b_to_a = b in _imports(file(a), ROOT), a in _imports(file(b), ROOT)
    assert not (a_to_b and b_to_a), f"{a} and {b} import each other"
