"""The lean `dbfleet wal push|fetch` path: what it imports, its profile cache, and push/fetch semantics
against a real filesystem repository (no database server; the real-cluster round trip is in
tests/integration/test_pitr.py, whose archive_command runs this entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engines.backup.repository import Repository
from engines.backup.wal import lean
from engines.backup.wal.archive import WalArchive
from engines.storage.filesystem import FilesystemStorage

SEGMENT = "000000010000000000000001"
HEAVY = ("celery", "click", "pydantic", "rich", "yaml", "workers.app", "workers.cli", "engines.config",
         "sqlalchemy", "kombu")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "repo.key").write_text("h18b-lean-key")
    config = tmp_path / "dbfleet.yaml"
    config.write_text(json.dumps({
        "storage": {"repo": {"type": "filesystem", "path": str(tmp_path / "repo"),
                             "key_file": str(tmp_path / "repo.key")}},
        "database_scripts": {"backup": {"storage": "repo", "compression_level": 5}},
        "databases": {"h18b_pg": {"kind": "postgresql", "host": "127.0.0.1"},
                      "h18b_redis": {"kind": "redis", "host": "127.0.0.1"}}}))
    segment = tmp_path / "pg_wal" / SEGMENT
    segment.parent.mkdir()
    segment.write_bytes(os.urandom(1 << 16) * 8)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))
    monkeypatch.delenv("DBFLEET_DB", raising=False)
    return {"root": tmp_path, "config": config, "segment": segment}


def _run(*argv: str) -> int:
    parsed = lean.parse(list(argv))
    assert parsed is not None, argv
    try:
        lean.run(parsed)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _entry(world: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(world["root"] / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "workers.entry", "--config",
                           str(world["config"]), *argv], capture_output=True, text=True, env=env, timeout=120)


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_wal_push_imports_neither_celery_nor_the_cli_nor_the_config_models(world: dict[str, Any]) -> None:
    first = _entry(world, "wal", "push", str(world["segment"]), "--db", "h18b_pg")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "archived (512.0 KiB" in first.stderr
    modules = _imported(first.stderr)
    assert "engines.backup.wal.lean" in modules and "engines.backup.repository" in modules
    assert not {m for m in modules if m.split(".")[0] in ("celery", "click", "rich", "kombu")}
    assert "workers.app" not in modules and "workers.cli" not in modules
    again = _entry(world, "wal", "push", str(world["segment"]), "--db", "h18b_pg")  # the profile is cached now
    assert again.returncode == 0 and "already archived" in again.stderr
    heavy = {m for m in _imported(again.stderr) if m in HEAVY or m.split(".")[0] in HEAVY}
    assert heavy == set()
    fetched = world["root"] / "fetched"
    back = _entry(world, "wal", "fetch", SEGMENT, str(fetched), "--db", "h18b_pg")
    assert back.returncode == 0 and fetched.read_bytes() == world["segment"].read_bytes()
    assert not {m for m in _imported(back.stderr) if m in HEAVY or m.split(".")[0] in HEAVY}


def test_the_full_cli_still_answers_everything_else(world: dict[str, Any]) -> None:
    helped = _entry(world, "wal", "push", "--help")
    assert helped.returncode == 0 and "archive_command" in helped.stdout
    assert "click" in _imported(helped.stderr)  # --help is the full CLI's
    missing = _entry(world, "wal", "push", str(world["root"] / "nope"), "--db", "h18b_pg")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_push_is_idempotent_refuses_other_content_and_fetch_round_trips(world: dict[str, Any]) -> None:
    seg = str(world["segment"])
    assert _run("wal", "push", seg, "--db", "h18b_pg") == 0
    assert _run("wal", "push", "--db=h18b_pg", seg) == 0  # a retry after a lost acknowledgement
    other = world["root"] / "other" / SEGMENT
    other.parent.mkdir()
    other.write_bytes(b"x" * 1000)
    assert _run("wal", "push", str(other), "--db", "h18b_pg") == 2  # PostgreSQL keeps the segment and retries
    repo = Repository.open(FilesystemStorage(world["root"] / "repo"), "h18b-lean-key")
    record = WalArchive(repo, "h18b_pg").load(SEGMENT)
    assert record is not None and record["size"] == world["segment"].stat().st_size  # the first file stayed
    dest = world["root"] / "restored"
    assert _run("wal", "fetch", SEGMENT, str(dest), "--db", "h18b_pg") == 0
    assert dest.read_bytes() == world["segment"].read_bytes()
    assert _run("wal", "fetch", "000000010000000000000002", str(dest), "--db", "h18b_pg") == 1  # not archived
    assert _run("wal", "push", seg, "--db", "h18b_redis") == 2  # not PostgreSQL
    assert _run("wal", "push", seg, "--db", "h18b_nope") == 2  # unknown id


def test_a_config_change_is_seen_at_once(world: dict[str, Any]) -> None:
    assert _run("wal", "push", str(world["segment"]), "--db", "h18b_pg") == 0
    cached = list((world["root"] / "cache" / "dbfleet").glob("wal-profile-*.json"))
    assert len(cached) == 1 and "h18b-lean-key" not in cached[0].read_text()  # a key file's path, not the key
    assert cached[0].stat().st_mode & 0o077 == 0
    moved = json.loads(world["config"].read_text())
    moved["storage"]["repo"]["path"] = str(world["root"] / "repo2")
    world["config"].write_text(json.dumps(moved))
    assert _run("wal", "push", str(world["segment"]), "--db", "h18b_pg") == 0
    assert (world["root"] / "repo2" / "wal" / "h18b_pg" / SEGMENT).exists()  # not the old repository


def test_a_profile_directory_others_can_write_is_not_trusted(world: dict[str, Any]) -> None:
    cache = world["root"] / "cache" / "dbfleet"
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    assert lean._cache_dir() is None
    assert _run("wal", "push", str(world["segment"]), "--db", "h18b_pg") == 0  # validated every time instead
    assert list(cache.iterdir()) == []


def test_the_lean_parser_leaves_anything_unusual_to_the_full_cli(world: dict[str, Any]) -> None:
    seg = str(world["segment"])
    assert lean.parse(["wal", "push", seg, "--db", "x"]) == ("push", [seg], {
        "config": None, "state-dir": None, "db": "x", "storage": None})
    parsed = lean.parse(["--config=/c.yaml", "--state-dir", "/s", "wal", "fetch", "A", "B", "--storage", "s3",
                         "--db", "y"])
    assert parsed == ("fetch", ["A", "B"], {"config": "/c.yaml", "state-dir": "/s", "db": "y", "storage": "s3"})
    for argv in (["wal", "push", seg], ["wal", "push", seg, "--db"], ["wal", "push", "--help"],
                 ["wal", "push", seg, "--db", "x", "--verbose"], ["wal", "status", "--db", "x"],
                 ["--unknown", "wal", "push", seg, "--db", "x"], ["wal", "fetch", "A", "--db", "x"],
                 ["backups", "list"]):
        assert lean.parse(argv) is None, argv


def _pg_wal(world: dict[str, Any], count: int) -> list[Path]:
    """A pg_wal directory as the archiver leaves it with a backlog: segments, each marked .ready."""
    pg_wal = world["root"] / "data" / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    out = []
    for n in range(1, count + 1):
        seg = pg_wal / f"0000000100000000000000{n:02X}"
        seg.write_bytes(os.urandom(4096) * 16)
        (pg_wal / "archive_status" / f"{seg.name}.ready").touch()
        out.append(seg)
    return out


def _archived(world: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in (world["root"] / "repo" / "wal" / "h18b_pg").iterdir())


def test_a_backlog_is_pushed_ahead_and_the_later_calls_only_check_the_ledger(world: dict[str, Any]) -> None:
    segs = _pg_wal(world, 4)
    assert _run("wal", "push", str(segs[0]), "--db", "h18b_pg") == 0
    assert _archived(world) == [s.name for s in segs]  # the first call pushed the three waiting behind it
    (segs[0].parent / "archive_status" / f"{segs[0].name}.ready").rename(
        segs[0].parent / "archive_status" / f"{segs[0].name}.done")
    later = _entry(world, "wal", "push", str(segs[1]), "--db", "h18b_pg")
    assert later.returncode == 0 and "already archived (pushed ahead)" in later.stderr
    modules = _imported(later.stderr)
    assert "engines.backup.repository" not in modules and "engines.backup.crypto" not in modules  # no key needed
    # a file that changed since it was pushed ahead misses the ledger and meets the ordinary refusal
    segs[2].write_bytes(b"not the pushed segment")
    assert _run("wal", "push", str(segs[2]), "--db", "h18b_pg") == 2
    # a ledger entry whose index object is gone (a repository restored from an older copy) pushes again
    (world["root"] / "repo" / "wal" / "h18b_pg" / segs[3].name).unlink()
    assert _run("wal", "push", str(segs[3]), "--db", "h18b_pg") == 0
    assert segs[3].name in _archived(world)
    repo = Repository.open(FilesystemStorage(world["root"] / "repo"), "h18b-lean-key")
    dest = world["root"] / "back"
    assert WalArchive(repo, "h18b_pg").fetch(segs[3].name, dest) and dest.read_bytes() == segs[3].read_bytes()
