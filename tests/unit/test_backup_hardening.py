"""Issue 14 on the repository, without servers: an authenticated config, key slots and index, safe
stream names, data-key rotation, crashed uploads, private task directories and child environments.

Backups here are of real SQLite files through the real engine (SQLite needs no server)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engines.backup import crypto, tools
from engines.backup.check import verify
from engines.backup.drill import drill
from engines.backup.dumpers.base import RestoreOptions, Target, check_dbname
from engines.backup.dumpers.postgres import conn_params, passfile_text
from engines.backup.engine import find_backup, restore_backup, run_backup
from engines.backup.private import contained, sweep, task_dir
from engines.backup.prune import prune
from engines.backup.repository import Repository, canonical
from engines.backup.upgrade import upgrade
from engines.config import RetentionPolicy
from engines.errors import ConfigError, IntegrityError, RepositoryError, RestoreRefused, StorageError, WrongKeyError
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db
from tests.servers import CANARY

KEY = "h2-unit-key"
CARD = "4111111111111111"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key slots record their scrypt parameters; a cheap setting keeps these tests fast."""
    monkeypatch.setattr(crypto, "SCRYPT", {"n": 2**10, "r": 8, "p": 1})


@pytest.fixture
def lite(tmp_path: Path) -> Any:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE cards (id INTEGER PRIMARY KEY, number TEXT)")
        conn.executemany("INSERT INTO cards (number) VALUES (?)", [(f"{CARD} #{i}",) for i in range(2000)])
    return db("shop", kind="sqlite", path=str(path))


@pytest.fixture
def repo(tmp_path: Path, lite: Any) -> Repository:
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)
    run_backup(repo, lite, workdir=tmp_path)
    return repo


def _root(repo: Repository) -> Path:
    return Path(repo.storage.root)  # type: ignore[attr-defined]


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


# -- section 4: the config is authenticated ---------------------------------------------------
def test_config_replaced_with_encryption_none_is_refused_and_no_plaintext_is_stored(
        repo: Repository, lite: Any, tmp_path: Path) -> None:
    config = json.loads((_root(repo) / "config").read_text())
    forged = {k: v for k, v in config.items() if k != "mac"} | {"encryption": "none", "chunk_id": "sha256"}
    (_root(repo) / "config").write_text(json.dumps(forged))
    for opener in (lambda: Repository.open_or_init(repo.storage, KEY),
                   lambda: Repository.open(repo.storage, KEY),
                   lambda: Repository.open(repo.storage, None, expect_encrypted=True),
                   lambda: Repository.open(repo.storage, None)):  # key slots exist: never unencrypted
        with pytest.raises(IntegrityError, match='"encryption": "none".*replaced'):
            opener()
    assert CARD.encode() not in _all_bytes(_root(repo))


def test_config_modified_without_the_key_does_not_verify(repo: Repository) -> None:
    config = json.loads((_root(repo) / "config").read_text())
    config["chunker"]["avg_size"] = 4096
    (_root(repo) / "config").write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match="config does not verify"):
        Repository.open(repo.storage, KEY)


def test_restore_refuses_an_unencrypted_object_in_an_encrypted_repository(
        repo: Repository, lite: Any, tmp_path: Path) -> None:
    manifest = find_backup(repo, "shop")
    cid, length = manifest["streams"][0]["chunks"][0]
    plain = crypto.Cipher(None).seal(b"\0" * length, repo.chunk_key(cid), level=None)
    (_root(repo) / repo.chunk_key(cid)).write_bytes(plain)
    target = tmp_path / "restored.db"
    with pytest.raises(IntegrityError, match="encryption flag does not match"):
        restore_backup(Repository.open(repo.storage, KEY), lite, Target(lite, None),
                       options=RestoreOptions(target_path=str(target)), spool_dir=tmp_path / "spool")
    assert not target.exists()


def test_a_deleted_config_is_an_error_never_a_new_repository(repo: Repository) -> None:
    (_root(repo) / "config").unlink()
    for opener in (lambda: Repository.open_or_init(repo.storage, KEY),
                   lambda: Repository.init(repo.storage, KEY), lambda: Repository.open(repo.storage, KEY)):
        with pytest.raises(RepositoryError, match="holds repository objects .* but no config"):
            opener()
    assert not (_root(repo) / "config").exists()
    assert len(list((_root(repo) / "keys").iterdir())) == 1  # no second key slot was added


def test_format_1_repositories_are_refused_until_upgraded(repo: Repository, lite: Any) -> None:
    backup_id = find_backup(repo, "shop")["backup_id"]
    root = _root(repo)
    config = json.loads((root / "config").read_text())
    config.pop("mac")
    config["version"] = 1
    (root / "config").write_text(json.dumps(config))
    for slot in (root / "keys").iterdir():
        slot.write_text(json.dumps({k: v for k, v in json.loads(slot.read_text()).items() if k != "mac"}))
    for entry in (root / "index").rglob("*"):
        if entry.is_file():
            entry.unlink()
    with pytest.raises(RepositoryError, match="version 1 .*dbfleet repo upgrade"):
        Repository.open(repo.storage, KEY)
    assert upgrade(repo.storage, KEY) == {"upgraded": True, "version": 2, "backups_indexed": 1}
    assert find_backup(Repository.open(repo.storage, KEY), "shop")["backup_id"] == backup_id


# -- section 7: damaged key slots -------------------------------------------------------------
def test_a_damaged_key_slot_is_skipped_and_reported(repo: Repository) -> None:
    other = repo.add_key("second-key", "second")
    (_root(repo) / "keys" / other).write_text("{not json")
    opened = Repository.open(repo.storage, KEY)
    assert [p.split(":")[0] for p in opened.unreadable_slots] == [f"keys/{other}"]
    assert [k["label"] for k in opened.keys()] == ["initial"]
    report = verify(opened, "shop")
    assert not report["ok"] and report["problems"][0]["object"] == f"keys/{other}"
    mine = next(p for p in (_root(repo) / "keys").iterdir() if p.name != other)
    slot = json.loads(mine.read_text())
    slot["wrapped"] = "%%%not base64%%%"
    mine.write_text(json.dumps(slot))
    with pytest.raises(WrongKeyError, match=r"opens none .* 2 unreadable slot\(s\) skipped"):
        Repository.open(repo.storage, KEY)


def test_a_key_slot_relabelled_without_the_key_is_not_trusted(repo: Repository) -> None:
    path = next((_root(repo) / "keys").iterdir())
    slot = json.loads(path.read_text())
    slot["label"] = "attacker's label"
    path.write_text(json.dumps(slot))
    with pytest.raises(WrongKeyError, match="MAC mismatch"):
        Repository.open(repo.storage, KEY)


def test_an_empty_key_is_refused(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="empty key"):
        repo.add_key("", "empty")


# -- section 4: data-key rotation -------------------------------------------------------------
def test_new_data_key_seals_new_objects_and_old_ones_stay_readable(repo: Repository, lite: Any,
                                                                   tmp_path: Path) -> None:
    first = find_backup(repo, "shop")
    old_slots = repo.slots_opened_by(KEY)
    new_slot = repo.rotate_data_key("rotated-key", "rotated")
    for slot in old_slots:
        repo.remove_key(slot)
    with sqlite3.connect(lite.path) as conn:
        conn.executemany("INSERT INTO cards (number) VALUES (?)", [(os.urandom(40).hex(),) for _ in range(3000)])
    run_backup(repo, lite, workdir=tmp_path)
    second = find_backup(repo, "shop")
    new_chunk = next(c for c, _ in second["streams"][0]["chunks"] if c not in
                     {c for c, _ in first["streams"][0]["chunks"]})
    blob = (_root(repo) / repo.chunk_key(new_chunk)).read_bytes()
    assert blob[4] & crypto.EPOCH and blob[5] == 1  # sealed with data key 1
    with pytest.raises(WrongKeyError):
        Repository.open(repo.storage, KEY)  # the old key's slot is gone
    reopened = Repository.open(repo.storage, "rotated-key")
    assert [k["id"] for k in reopened.keys()] == [new_slot]
    report = verify(reopened, "shop", read_data=True)
    assert report["ok"], report["problems"]  # old (key 0) and new (key 1) chunks
    stale = crypto.Cipher(reopened.cipher.master[:64])  # type: ignore[index]  # a copy taken before rotation
    with pytest.raises(IntegrityError, match="data key 1 is not in this key slot"):
        stale.open(blob, repo.chunk_key(new_chunk))


# -- section 4: stream names ------------------------------------------------------------------
def _forge_stream_name(repo: Repository, name: str) -> None:
    """A key holder's manifest whose stream name is a path (written around save_manifest's check)."""
    manifest = find_backup(repo, "shop")
    manifest["streams"][0]["name"] = name
    key = repo.manifest_key("shop", manifest["backup_id"])
    body = json.dumps(manifest).encode()
    repo.storage.put(key, repo.cipher.seal(body, key, level=3))
    index = repo.index_key("shop", manifest["backup_id"])
    entry = {"database_id": "shop", "backup_id": manifest["backup_id"],
             "manifest_sha256": __import__("hashlib").sha256(body).hexdigest()}
    repo.storage.put(index, repo.cipher.seal(json.dumps(entry).encode(), index, level=None))


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/h2-absolute-escape", "a/b", ".."])
def test_stream_names_that_are_paths_are_refused_by_restore_and_drill(
        repo: Repository, lite: Any, tmp_path: Path, name: str) -> None:
    with pytest.raises(IntegrityError, match="refusing stream name"):
        repo.save_manifest(find_backup(repo, "shop") | {"streams": [{"name": name, "chunks": []}]})
    _forge_stream_name(repo, name)
    spool = tmp_path / "spool" / "deep" / "er"
    with pytest.raises(IntegrityError, match="refusing stream name"):
        restore_backup(repo, lite, Target(lite, None), options=RestoreOptions(target_path=str(tmp_path / "r.db")),
                       spool_dir=spool)
    with pytest.raises(IntegrityError, match="refusing stream name"):
        drill(repo, lite, spool_dir=spool)
    assert not (tmp_path / "spool" / "escaped").exists() and not Path("/tmp/h2-absolute-escape").exists()
    assert not (tmp_path / "r.db").exists()


# -- section 7: the index; a deleted or damaged manifest --------------------------------------
def test_a_deleted_manifest_is_reported_and_latest_does_not_move(repo: Repository, lite: Any,
                                                                 tmp_path: Path) -> None:
    first = find_backup(repo, "shop")["backup_id"]
    run_backup(repo, lite, workdir=tmp_path)
    latest = find_backup(repo, "shop")["backup_id"]
    (_root(repo) / repo.manifest_key("shop", latest)).unlink()
    with pytest.raises(IntegrityError, match=f"manifest backups/shop/{latest} is missing"):
        find_backup(repo, "shop")  # "latest" is still the newest backup, not silently the previous one
    report = verify(repo, "shop")
    assert not report["ok"] and report["problems"][0]["backup"] == f"shop/{latest}"
    assert "is missing" in report["problems"][0]["problem"]
    assert find_backup(repo, "shop", first)["backup_id"] == first


def test_a_manifest_missing_from_the_index_is_reported_and_its_chunks_kept(repo: Repository) -> None:
    backup_id = find_backup(repo, "shop")["backup_id"]
    (_root(repo) / repo.index_key("shop", backup_id)).unlink()
    report = verify(repo, "shop")
    assert report["problems"][0]["problem"].startswith("manifest not in the index")
    before = set(repo.chunk_sizes())
    prune(repo, RetentionPolicy(last=1), None)
    assert set(repo.chunk_sizes()) == before


def test_prune_forgets_backups_with_authenticated_tombstones(repo: Repository, lite: Any, tmp_path: Path) -> None:
    run_backup(repo, lite, workdir=tmp_path)
    result = prune(repo, RetentionPolicy(last=1), None)
    gone = result["forgotten"][0].split("/")[1]
    assert (_root(repo) / "forgotten" / "shop" / gone).is_file()
    assert [b for _d, b in repo.backup_ids("shop")] != [gone] and len(repo.backup_ids("shop")) == 1
    assert verify(repo, "shop", read_data=True)["ok"]


# -- section 7: crashed uploads ---------------------------------------------------------------
def test_prune_removes_temporary_files_of_crashed_uploads_older_than_the_lock_staleness(repo: Repository) -> None:
    data = _root(repo) / "data" / "ab"
    data.mkdir(parents=True, exist_ok=True)
    old, fresh = data / ".crash1.dbfleet-tmp", data / ".crash2.dbfleet-tmp"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 100)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    result = prune(repo, RetentionPolicy(last=1), None)
    assert result["temporary_files_removed"] == 1
    assert not old.exists() and fresh.exists()  # a fresh one may belong to an upload still running


# -- section 7: private directories -----------------------------------------------------------
def test_task_directories_are_private_removed_at_the_end_and_swept_after_a_kill(tmp_path: Path) -> None:
    with task_dir(tmp_path, "task-1") as work:
        assert (work.stat().st_mode & 0o777) == 0o700 and ((tmp_path / "private").stat().st_mode & 0o777) == 0o700
        (work / "pgpass").write_text(CANARY)
    assert not (tmp_path / "private" / "task-1").exists()
    dead = tmp_path / "private" / "killed-task"
    dead.mkdir()
    (dead / "owner").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7}))
    (dead / "spool").write_text(CANARY)
    live = tmp_path / "private" / "running-task"
    live.mkdir()
    (live / "owner").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))
    assert sweep(tmp_path) == ["killed-task"]
    assert not dead.exists() and live.exists()
    dead.mkdir()
    (dead / "owner").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7}))
    with task_dir(tmp_path, "killed-task") as again:  # the redelivered task starts clean
        assert sorted(p.name for p in again.iterdir()) == ["owner"]
    other = tmp_path / "private" / "local-killed-run"  # a killed local run: the next task of any id sweeps it
    other.mkdir()
    (other / "owner").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 9}))
    (other / "pgpass").write_text(CANARY)
    creating = tmp_path / "private" / "being-created"  # no owner file yet: left alone while it is young
    creating.mkdir()
    with task_dir(tmp_path, "next-task"):
        assert not other.exists() and creating.exists() and live.exists()
    os.utime(creating, (0, 0))
    assert "being-created" in sweep(tmp_path)


def test_paths_from_task_options_stay_inside_configured_directories(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    os.symlink("/etc", tmp_path / "allowed" / "link")
    assert contained(tmp_path / "allowed" / "x.db", [tmp_path / "allowed"], "target_path").name == "x.db"
    for bad in ("/etc/passwd", str(tmp_path / "allowed" / ".." / "x.db"), str(tmp_path / "allowed" / "link" / "x")):
        with pytest.raises(ConfigError, match="outside the directories the config allows"):
            contained(bad, [tmp_path / "allowed"], "target_path")


# -- sections 1 and 5: identifiers, passfiles, child environments -----------------------------
@pytest.mark.parametrize("name", ["host=evil.example port=5432", "--execute=DROP DATABASE x", "a/b", "",
                                  "x" * 64, "postgresql://evil/db", "tab\there"])
def test_database_names_that_are_conninfo_or_options_are_refused(name: str) -> None:
    with pytest.raises(RestoreRefused, match="refusing target_dbname"):
        check_dbname(name)
    target = Target(db("t", kind="postgresql", host="127.0.0.1", dbname="ok"), None)
    with pytest.raises(RestoreRefused):
        from engines.backup.dumpers.base import Dumper

        Dumper.target_dbname(target, RestoreOptions(target_dbname=name or "-"))


def test_passfile_lines_name_host_port_database_and_user() -> None:
    source = db("p", kind="postgresql", dsn="host=db1,db2 port=5433 dbname=music user=app sslmode=require")
    params = conn_params(source, "music_copy")
    assert params == {"host": "db1,db2", "port": "5433", "dbname": "music_copy", "user": "app", "sslmode": "require"}
    text = passfile_text(params, "p:w\\d", ["music_copy", "postgres"])
    assert text.splitlines() == ["db1:5433:music_copy:app:p\\:w\\\\d", "db1:5433:postgres:app:p\\:w\\\\d",
                                 "db2:5433:music_copy:app:p\\:w\\\\d", "db2:5433:postgres:app:p\\:w\\\\d"]
    assert "*:*:*:*" not in text


def test_client_tools_get_a_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBFLEET_TEST_CANARY", CANARY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    env = tools.child_env({"PGHOST": "127.0.0.1"})
    assert CANARY not in json.dumps(env) and env["PGHOST"] == "127.0.0.1" and "PATH" in env
    out = tools.run_tool(["/usr/bin/env"], env={"PGUSER": "x"}, what="env")
    assert CANARY not in out and "PGUSER=x" in out


def test_canonical_bytes_exclude_the_mac() -> None:
    assert canonical({"b": 1, "a": [1], "mac": "x"}) == b'{"a":[1],"b":1}'


def test_storage_keys_stay_refused(repo: Repository) -> None:
    with pytest.raises(StorageError):
        repo.manifest_key("../x", "y")


def test_task_options_cannot_point_restores_or_spools_outside_configured_directories(
        fresh_runtime: Path, lite: Any, tmp_path: Path) -> None:
    import yaml

    (tmp_path / "key").write_text(KEY)
    fresh_runtime.write_text(yaml.safe_dump({
        "fleet": {"state_dir": str(tmp_path / "state")},
        "databases": {"shop": {"kind": "sqlite", "path": lite.path}},
        "storage": {"local": {"type": "filesystem", "path": str(tmp_path / "repo"), "key_file": str(tmp_path / "key")}},
        "database_scripts": {"backup": {"restore_dirs": [str(tmp_path / "restores")]}}}))
    from workers import backups, runtime  # workers.app reads the config at import time

    runtime.reset()
    shop = runtime.config().database("shop")
    backups.do_backup(shop, {}, task_id="h2-task-backup")
    for opts, field in (({"target_path": "/tmp/h2-outside/shop.db"}, "target_path"),
                        ({"target_path": str(tmp_path / "restores" / ".." / ".." / "x.db")}, "target_path"),
                        ({"spool_dir": "/"}, "spool_dir")):
        with pytest.raises(ConfigError, match=f"{field}: .* outside the directories the config allows"):
            backups.do_restore(shop, opts, task_id="h2-task-restore")
    assert not Path("/tmp/h2-outside").exists()
    result, ok, _ = backups.do_restore(shop, {"target_path": str(tmp_path / "restores" / "copy.db")},
                                       task_id="h2-task-restore")
    assert ok and result["path"] == str((tmp_path / "restores" / "copy.db").resolve())
    private = tmp_path / "state" / "private"
    assert (private.stat().st_mode & 0o777) == 0o700 and list(private.iterdir()) == []
