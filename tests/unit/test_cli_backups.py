"""`dbfleet backups` / `dbfleet repo` in-process (--local) on SQLite: tables, exit codes, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from workers import runtime
from workers.cli import cli


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE plays (id INTEGER PRIMARY KEY, track TEXT)")
        conn.executemany("INSERT INTO plays (track) VALUES (?)", [(f"t{i}",) for i in range(3000)])
    (tmp_path / "key").write_text("cli-repo-key\n")
    cfg = {"fleet": {"state_dir": str(tmp_path / "state")},
           "databases": {"app": {"kind": "sqlite", "path": str(tmp_path / "app.db")},
                         "copy": {"kind": "sqlite", "path": str(tmp_path / "copy.db")}},
           "storage": {"local": {"type": "filesystem", "path": str(tmp_path / "repo"),
                                 "key_file": str(tmp_path / "key")}},
           "database_scripts": {"backup": {"retention": {"last": 1}}}}
    path = tmp_path / "dbfleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DBFLEET_CONFIG", str(path))
    runtime.reset()
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    runtime.reset()
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _flat(text: str) -> str:
    """Table cells fold on narrow terminals: compare without whitespace and box characters."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│┃")


def test_backup_list_show_verify_restore_drill_prune(setup: Path) -> None:
    code, out = _run("backups", "run", "app", "--local")
    assert code == 0 and "stored (compressed, encrypted)" in out
    assert _run("backups", "run", "app", "--local")[0] == 0
    code, out = _run("backups", "list")
    assert code == 0 and out.count(" app ") == 2
    code, out = _run("backups", "show", "app")
    assert code == 0 and "plays" in out and "3000" in out and "rows (exact)" in out
    code, out = _run("backups", "verify", "app", "--read-data", "--local")
    assert code == 0 and "ok" in out
    code, out = _run("backups", "restore", "app", "--target", "copy", "--local")
    assert code == 0 and sqlite3.connect(setup / "copy.db").execute("SELECT count(*) FROM plays").fetchone()[0] == 3000
    code, out = _run("backups", "drill", "app", "--local")
    assert code == 0 and "passed" in out and "measured RTO" in out
    code, out = _run("backups", "prune", "app", "--local")
    assert code == 0 and "forgot app/" in out
    code, out = _run("history", "--db", "app", "--json")
    runs = json.loads(out)
    assert code == 0 and {r["script_type"] for r in runs} == {"backup", "backup_verify", "restore", "restore_drill",
                                                              "backup_prune"}
    assert all(r["queue"] == "local" and r["status"] == "succeeded" for r in runs)


def test_damaged_backup_exits_non_zero_and_restore_refuses(setup: Path) -> None:
    assert _run("backups", "run", "app", "--local")[0] == 0
    chunk = next(p for p in (setup / "repo" / "data").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:-1])
    code, out = _run("backups", "verify", "app", "--read-data", "--local")
    assert code == 1 and "1 problems" in out and "authenticationfailed" in _flat(out)
    code, out = _run("backups", "restore", "app", "--target", "copy", "--local")
    assert code == 2 and "authenticationfailed" in _flat(out) and not (setup / "copy.db").exists()


def test_key_rotation_and_wrong_key(setup: Path) -> None:
    assert _run("backups", "run", "app", "--local")[0] == 0
    (setup / "new.key").write_text("cli-new-key\n")
    (setup / "new.key").chmod(0o600)  # a key file others can read is refused
    code, out = _run("repo", "key", "rotate", "--new-key-file", str(setup / "new.key"))
    assert code == 0 and "removed key slot" in out
    code, out = _run("backups", "list")
    assert code == 2 and "wrongkey" in _flat(out)  # the config still names the old key
    (setup / "key").write_text("cli-new-key\n")
    code, out = _run("backups", "verify", "app", "--read-data", "--local")
    assert code == 0
    code, out = _run("repo", "info")
    assert code == 0 and "aes-256-gcm" in out


def test_bad_input(setup: Path) -> None:
    code, out = _run("backups", "run", "nope", "--local")
    assert code == 2 and "unknowndatabaseid'nope'" in _flat(out) and "app" in out
    code, out = _run("backups", "restore", "app", "--local")
    assert code == 2 and "norepositoryhere" in _flat(out)
    code, out = _run("backups", "run", "app", "--storage", "elsewhere", "--local")
    assert code == 2 and "unknownstoragetarget'elsewhere'" in _flat(out)
    assert _run("backups", "run", "app", "--local")[0] == 0
    code, out = _run("backups", "show", "app", "20990101")
    assert code == 2 and "nobackupsof'app'match'20990101'" in _flat(out)
