"""Damaged repositories are reported precisely and never restored; prune vs backup; the canary."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.backup.check import verify
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.engine import find_backup, restore_backup, run_backup
from engines.backup.locks import SHARED, RepoLock
from engines.backup.pipeline import ChunkWriter
from engines.backup.prune import prune
from engines.backup.repository import Repository
from engines.config import RetentionPolicy
from engines.errors import IntegrityError, RepositoryLocked, WrongKeyError
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db
from tests.integration import backup_cases as cases
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
KEY = "repo-key-for-damage"


@pytest.fixture(scope="module")
def source() -> Any:
    require("postgresql15")
    cases.make_pg("bk_dmg_src", rows=30_000)
    return db("src", kind="postgresql", host="127.0.0.1", dbname="bk_dmg_src", user="postgres")


@pytest.fixture
def backed_up(tmp_path: Path, source: Any) -> tuple[Repository, dict[str, Any]]:
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)
    run_backup(repo, source, workdir=tmp_path)
    return repo, find_backup(repo, "src")


def _chunk_path(repo: Repository, manifest: dict[str, Any], index: int = 1) -> Path:
    cid = manifest["streams"][0]["chunks"][index][0]
    return Path(repo.storage.root) / repo.chunk_key(cid)  # type: ignore[attr-defined]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage,expected", [(_flip, "authentication failed"), (_truncate, "authentication failed"),
                                             (_delete, "chunk missing")])
def test_chunk_damage_is_found_and_restore_writes_nothing(
        damage: Callable[[Path], None], expected: str, backed_up: tuple[Repository, dict[str, Any]],
        source: Any, tmp_path: Path) -> None:
    repo, manifest = backed_up
    path = _chunk_path(repo, manifest)
    damage(path)
    report = verify(repo, "src", read_data=True)
    assert not report["ok"] and report["problem_count"] == 1
    problem = report["problems"][0]
    assert problem["object"] == path.relative_to(repo.storage.root).as_posix()  # type: ignore[attr-defined]
    assert expected in problem["problem"] and problem["backup"] == f"src/{manifest['backup_id']}"
    with cases.pg_admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS bk_dmg_dst WITH (FORCE)")
    with pytest.raises(IntegrityError):
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname="bk_dmg_dst"),
                       spool_dir=tmp_path / "spool")
    with cases.pg_admin() as admin:  # the streamed load into the new database was dropped again
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = 'bk_dmg_dst'").fetchone() is None
        admin.execute("CREATE DATABASE bk_dmg_dst")  # an existing (empty) target: spool-first path
    with pytest.raises(IntegrityError):
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname="bk_dmg_dst"),
                       spool_dir=tmp_path / "spool")
    empty = cases.pg_fingerprint(5432, "bk_dmg_dst")
    assert empty == {}  # not a single table was written
    assert list((tmp_path / "spool").iterdir()) == []  # spooled plaintext removed too


def test_structure_check_finds_missing_chunk_without_reading_data(backed_up: tuple[Repository, dict[str, Any]]) -> None:
    repo, manifest = backed_up
    _chunk_path(repo, manifest, 0).unlink()
    report = verify(repo, "src")
    assert report["problem_count"] == 1 and "chunk missing" in report["problems"][0]["problem"]
    assert report["chunks_read"] == 0


def test_tampered_manifest_is_refused(backed_up: tuple[Repository, dict[str, Any]], source: Any,
                                      tmp_path: Path) -> None:
    repo, manifest = backed_up
    key = repo.manifest_key("src", manifest["backup_id"])
    path = Path(repo.storage.root) / key  # type: ignore[attr-defined]
    _flip(path)
    report = verify(repo, "src")
    assert report["problems"][0]["object"] == key and "authentication failed" in report["problems"][0]["problem"]
    with pytest.raises(IntegrityError, match=f"{key}: authentication failed"):
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname="bk_never"),
                       spool_dir=tmp_path)


def test_manifest_swapped_between_backups_is_refused(backed_up: tuple[Repository, dict[str, Any]],
                                                     source: Any, tmp_path: Path) -> None:
    repo, first = backed_up
    run_backup(repo, source, workdir=tmp_path)
    ids = [b for _d, b in repo.backup_ids("src")]
    root = Path(repo.storage.root)  # type: ignore[attr-defined]
    (root / "backups/src" / ids[1]).write_bytes((root / "backups/src" / ids[0]).read_bytes())
    with pytest.raises(IntegrityError, match="authentication failed"):
        repo.load_manifest("src", ids[1])


def test_wrong_key_is_refused(backed_up: tuple[Repository, dict[str, Any]]) -> None:
    repo, _ = backed_up
    with pytest.raises(WrongKeyError, match="wrong key"):
        Repository.open(repo.storage, "not-" + KEY)


def test_prune_waits_for_a_running_backup_and_loses_no_chunk(tmp_path: Path, source: Any) -> None:
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)
    for _ in range(3):
        run_backup(repo, source, workdir=tmp_path)
    # an interrupted backup left chunks without a manifest
    writer = ChunkWriter(repo, set(repo.chunk_sizes()), level=3)
    orphan = writer.write("dump", "raw", __import__("io").BytesIO(__import__("os").urandom(2_000_000)))
    writer.close()
    # a backup is running (its shared lock is held) when prune starts: prune must not run meanwhile
    lock = RepoLock(repo.storage, SHARED, "backup src").acquire()
    with pytest.raises(RepositoryLocked, match="backup src"):
        prune(repo, RetentionPolicy(last=1), None)
    results: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: results.update(prune(repo, RetentionPolicy(last=1), None, lock_wait=60)))
    waiter.start()
    # shared locks coexist; the wait covers the instants when the waiting prune probes with its own lock
    fresh = run_backup(repo, source, workdir=tmp_path, lock_wait=30)
    assert waiter.is_alive()  # still waiting for our lock
    lock.release()
    waiter.join(60)
    assert results["forgotten"] and len(results["kept"]) == 1
    assert results["kept"][0]["backup"] == f"src/{fresh['backup_id']}"
    assert not any(cid in repo.chunk_sizes() for cid, _ in orphan.chunks)
    assert verify(repo, "src", read_data=True)["ok"]


def test_concurrent_backups_and_prune_threads_keep_every_referenced_chunk(tmp_path: Path, source: Any) -> None:
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)
    errors: list[BaseException] = []

    def backup() -> None:
        try:
            run_backup(repo, source, workdir=tmp_path, lock_wait=60)
        except BaseException as exc:
            errors.append(exc)

    def pruner() -> None:
        for _ in range(5):
            try:
                prune(repo, RetentionPolicy(last=2), None, lock_wait=0)
            except RepositoryLocked:
                pass
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=backup) for _ in range(3)] + [threading.Thread(target=pruner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    report = verify(repo, "src", read_data=True)
    assert report["ok"] and report["backups_checked"] >= 2


def test_canary_password_never_reaches_repository_results_or_logs(
        tmp_path: Path, embedded_pg: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cases.make_pg("bk_canary", embedded_pg.port, CANARY, rows=1000)
    source = db("canary", kind="postgresql", host="127.0.0.1", port=embedded_pg.port, dbname="bk_canary",
                user="postgres", password_env="DBFLEET_TEST_CANARY")
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)
    result = run_backup(repo, source, workdir=tmp_path)
    manifest = find_backup(repo, "canary")
    blobs = [p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert blobs and not any(CANARY.encode() in b for b in blobs)
    assert CANARY not in json.dumps(result) and CANARY not in json.dumps(manifest)
    assert CANARY not in caplog.text
    assert not any(CANARY in p.name for p in tmp_path.rglob("*"))  # no credential files left behind
    assert [p for p in tmp_path.rglob("pgpass")] == []
