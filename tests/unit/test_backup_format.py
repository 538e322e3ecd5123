"""Repository format without servers: envelope, keys, dedup, retention, locks, streams."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engines.backup import crypto
from engines.backup.locks import EXCLUSIVE, SHARED, RepoLock, remove_stale
from engines.backup.pipeline import ChunkWriter, read_stream
from engines.backup.repository import Repository
from engines.backup.retention import plan
from engines.config import RetentionPolicy
from engines.errors import IntegrityError, RepositoryError, RepositoryLocked, StorageError, WrongKeyError
from engines.storage.filesystem import FilesystemStorage


def _data(n: int, seed: int = 1) -> bytes:
    """Incompressible-ish but reproducible bytes."""
    import random

    return random.Random(seed).randbytes(n)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FilesystemStorage(tmp_path / "repo"), "user-key-1")


def test_envelope_round_trip_and_every_kind_of_damage() -> None:
    cipher = crypto.Cipher(crypto.new_master())
    payload = b"row,row,row\n" * 1000
    blob = cipher.seal(payload, "data/ab/x", level=3)
    assert cipher.open(blob, "data/ab/x") == payload
    assert payload not in blob and len(blob) < len(payload)  # compressed and encrypted
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    with pytest.raises(IntegrityError, match="authentication failed"):
        cipher.open(bytes(flipped), "data/ab/x")
    with pytest.raises(IntegrityError, match="authentication failed"):
        cipher.open(blob[:-7], "data/ab/x")
    with pytest.raises(IntegrityError, match="authentication failed"):
        cipher.open(blob, "data/ab/y")  # moved to another name
    with pytest.raises(IntegrityError, match="not a dbfleet object"):
        cipher.open(b"DBF", "data/ab/x")
    with pytest.raises(IntegrityError, match="authentication failed"):
        crypto.Cipher(crypto.new_master()).open(blob, "data/ab/x")


def test_unencrypted_envelope_detects_corruption_and_honours_no_compression() -> None:
    cipher = crypto.Cipher(None)
    payload = b"a" * 5000
    raw = cipher.seal(payload, "k", level=None)
    assert payload in raw and raw[4] == 0  # neither compressed nor encrypted
    assert cipher.open(raw, "k") == payload
    damaged = raw[:100] + b"b" + raw[101:]
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        cipher.open(damaged, "k")


def test_chunk_ids_are_keyed() -> None:
    a, b = crypto.Cipher(crypto.new_master()), crypto.Cipher(crypto.new_master())
    assert a.chunk_id(b"same") != b.chunk_id(b"same")  # ids leak nothing across repositories
    assert crypto.Cipher(None).chunk_id(b"same") == crypto.Cipher(None).chunk_id(b"same")


def test_wrong_key_missing_key_and_existing_repository(tmp_path: Path, repo: Repository) -> None:
    storage = FilesystemStorage(tmp_path / "repo")
    with pytest.raises(WrongKeyError, match="wrong key"):
        Repository.open(storage, "not-the-key")
    with pytest.raises(WrongKeyError, match="no key was given"):
        Repository.open(storage, None)
    with pytest.raises(RepositoryError, match="already exists"):
        Repository.init(storage, "user-key-1")
    with pytest.raises(RepositoryError, match="no repository here"):
        Repository.open(FilesystemStorage(tmp_path / "empty"), "k")
    with pytest.raises(RepositoryError, match="needs a key"):
        Repository.init(FilesystemStorage(tmp_path / "other"), None)


def test_key_add_and_rotate_rewrite_no_data(tmp_path: Path, repo: Repository) -> None:
    writer = ChunkWriter(repo, set(), level=3)
    record = writer.write("s", "raw", io.BytesIO(_data(3_000_000)))
    writer.close()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()}
    new_slot = repo.add_key("user-key-2", "rotation")
    old_slots = repo.slots_opened_by("user-key-1")
    for slot in old_slots:
        repo.remove_key(slot)
    storage = FilesystemStorage(tmp_path / "repo")
    with pytest.raises(WrongKeyError):
        Repository.open(storage, "user-key-1")
    reopened = Repository.open(storage, "user-key-2")
    out = io.BytesIO()
    read_stream(reopened, record.to_dict(), out)
    assert out.getvalue() == _data(3_000_000)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()}
    assert before == after and [k["id"] for k in reopened.keys()] == [new_slot]
    with pytest.raises(RepositoryError, match="last key slot"):
        reopened.remove_key(new_slot)


def test_dedup_within_and_across_streams(repo: Repository) -> None:
    base = _data(24_000_000)
    writer = ChunkWriter(repo, set(repo.chunk_sizes()), level=3)
    first = writer.write("a", "raw", io.BytesIO(base))
    # the same data with 1% changed in the middle: only the chunks around the change are new
    changed = bytearray(base)
    changed[12_000_000:12_060_000] = _data(60_000, seed=2)
    second = writer.write("b", "raw", io.BytesIO(bytes(changed)))
    writer.close()
    assert first.new_bytes == len(base)
    assert 0 < second.new_bytes < 0.2 * len(base) and second.new_chunks <= 3
    assert len(repo.chunk_sizes()) == first.new_chunks + second.new_chunks


def test_read_stream_reports_a_tampered_manifest_record(repo: Repository) -> None:
    writer = ChunkWriter(repo, set(), level=None)
    record = writer.write("a", "raw", io.BytesIO(_data(2_000_000))).to_dict()
    writer.close()
    record["sha256"] = "0" * 64
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        read_stream(repo, record, io.BytesIO())
    record["chunks"][0][0] = record["chunks"][1][0]
    with pytest.raises(IntegrityError, match="the manifest says"):
        read_stream(repo, record, io.BytesIO())


def _ids(*stamps: str) -> list[str]:
    return [f"{s}-abcdef" for s in stamps]


def test_retention_keeps_newest_per_bucket() -> None:
    # two backups a day for 20 days in 2026-10/11
    ids = [f"202611{d:02d}T{h:02d}0000Z-{d:02d}{h:02d}00" for d in range(1, 21) for h in (2, 14)]
    ids += [f"202610{d:02d}T020000Z-0{d:02d}000" for d in (1, 15, 31)]
    keep = plan(ids, RetentionPolicy(daily=7, weekly=2, monthly=2), None)
    daily = [b for b, r in keep.items() if "daily" in r]
    assert sorted(daily) == sorted(f"202611{d:02d}T140000Z-{d:02d}1400" for d in range(14, 21))
    monthly = sorted(b for b, r in keep.items() if "monthly" in r)
    assert monthly == ["20261031T020000Z-031000", "20261120T140000Z-201400"]
    assert len([b for b, r in keep.items() if "weekly" in r]) == 2
    assert "20261101T020000Z-010200" not in keep


def test_retention_days_and_safety_rules() -> None:
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    ids = _ids("20261101T000000Z", "20261120T000000Z", "20261123T000000Z")
    keep = plan(ids, None, 7, now)
    assert set(keep) == set(ids[1:])
    assert plan(ids, None, None) == {b: ["no retention rule"] for b in reversed(ids)}
    only_old = _ids("20200101T000000Z")
    assert plan(only_old, None, 1, now) == {only_old[0]: ["newest"]}  # never forget the newest


def test_locks_exclude_prune_while_backups_run(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "repo")
    with RepoLock(storage, SHARED, "backup a"), RepoLock(storage, SHARED, "backup b"):
        with pytest.raises(RepositoryLocked, match="backup a|backup b"):
            RepoLock(storage, EXCLUSIVE, "prune").acquire()
    with RepoLock(storage, EXCLUSIVE, "prune"):
        with pytest.raises(RepositoryLocked, match="prune"):
            RepoLock(storage, SHARED, "backup").acquire()
    assert list(storage.list("locks/")) == []


def test_lock_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "repo")
    code = ("import sys; from engines.storage.filesystem import FilesystemStorage as F;"
            "from engines.backup.locks import RepoLock; RepoLock(F(sys.argv[1]), 'shared', 'backup').acquire();"
            "import os; os._exit(0)")  # exits without releasing, like a SIGKILLed worker
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo")], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    assert len(list(storage.list("locks/"))) == 1
    with RepoLock(storage, EXCLUSIVE, "prune"):
        pass
    assert len(remove_stale(storage)) == 1


def test_storage_refuses_keys_that_escape(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "repo")
    for key in ("../etc/passwd", "/abs", "a/../../b", "backups/x y", "a\x00b"):
        with pytest.raises(StorageError, match="refusing object key"):
            storage.put(key, b"x")
    assert not (tmp_path / "etc").exists()


def test_filesystem_put_is_atomic_and_put_new_exclusive(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "r")
    assert storage.put_new("locks/a", b"1") and not storage.put_new("locks/a", b"2")
    assert storage.get("locks/a") == b"1"
    leftovers = [p for p in (tmp_path / "r").rglob("*") if p.name.endswith(".dbfleet-tmp")]
    assert leftovers == []


def test_repository_files_carry_no_plaintext(tmp_path: Path, repo: Repository) -> None:
    secret_rows = b"alice@example.com,DE89370400440532013000\n" * 2000
    writer = ChunkWriter(repo, set(), level=3)
    record = writer.write("dump", "sql", io.BytesIO(secret_rows))
    writer.close()
    repo.save_manifest({"backup_id": "20261124T000000Z-aaaaaa", "database_id": "db1", "streams": [record.to_dict()],
                        "dump": {"row_counts": {"users_pii_table": 1}}})
    for path in (tmp_path / "repo").rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            assert b"alice@example.com" not in body and b"users_pii_table" not in body
            assert b"user-key-1" not in body
    config = json.loads((tmp_path / "repo" / "config").read_text())
    assert config["encryption"] == "aes-256-gcm" and os.environ.get("DBFLEET_TEST_CANARY") not in str(config)
