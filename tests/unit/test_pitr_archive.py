"""WAL names, continuity, recovery targets, the tar tap, and prune/verify of a WAL archive in a real
filesystem repository (no database server: base backup manifests are written by hand)."""

from __future__ import annotations

import io
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engines.backup.check import verify
from engines.backup.physical.tar import TarTap
from engines.backup.physical.target import RecoveryTarget
from engines.backup.physical.walplan import plan_wal
from engines.backup.prune import prune
from engines.backup.repository import Repository, new_backup_id
from engines.backup.wal import continuity, names
from engines.backup.wal.archive import WalArchive, WalConflict
from engines.backup.wal.hooks import parse_window
from engines.config import RetentionPolicy
from engines.errors import RestoreRefused
from engines.storage.filesystem import FilesystemStorage

SEG = 16 << 20


def seg(n: int, tli: int = 1) -> str:
    return names.segment_name(tli, n, SEG)


def test_segment_names_and_lsns_round_trip() -> None:
    assert names.segment_name(1, 256, SEG) == "000000010000000100000000"
    assert names.segment_number("000000010000000100000000", SEG) == 256
    assert names.segment_of(1, names.parse_lsn("1/2000028"), SEG) == "000000010000000100000002"
    assert names.format_lsn(names.parse_lsn("AB/CDEF0123")) == "AB/CDEF0123"
    for bad in ("../etc/passwd", "00000001000000000000000", "RECOVERYXLOG"):
        with pytest.raises(ValueError):
            names.check_name(bad)
    assert names.check_name("00000002.history") == "00000002.history"


def test_continuity_reports_the_first_gap_and_the_unbroken_run() -> None:
    archived = [seg(n) for n in (3, 4, 5, 7, 8)] + [seg(6, tli=2), "00000002.history"]
    run = continuity.check(archived, seg(3), SEG)
    assert run.last_contiguous == seg(5)
    assert run.newest == seg(8)
    assert run.missing == [seg(6)] and not run.ok
    assert continuity.check([seg(n) for n in (3, 4)], seg(3), SEG).ok


def test_a_recovery_target_needs_exactly_one_kind_and_a_time_zone() -> None:
    assert RecoveryTarget.from_options({}).kind == "latest"
    assert RecoveryTarget.from_options({"lsn": "0/3000000"}).settings() == {"recovery_target_lsn": "0/3000000"}
    when = RecoveryTarget.from_options({"pitr": "2026-11-29 14:03:00+01"})
    assert when.settings() == {"recovery_target_time": "2026-11-29 13:03:00+00:00"}
    for bad in ({"pitr": "2026-11-29 14:03:00"}, {"pitr": "yesterday"}, {"lsn": "12"}, {"xid": "x1"},
                {"pitr": "2026-11-29 14:03:00Z", "latest": True}):
        with pytest.raises(RestoreRefused):
            RecoveryTarget.from_options(bad)
    assert parse_window("7d") == timedelta(days=7)
    with pytest.raises(ValueError):
        parse_window("7 days")


def test_the_tar_tap_passes_bytes_through_and_keeps_the_wanted_members() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("backup_label", b"START WAL LOCATION: 0/2000028"), ("base/1/1259", b"x" * 5000),
                           ("backup_manifest", b'{"WAL-Ranges": []}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tap = TarTap(io.BytesIO(raw.getvalue()), {"backup_label", "backup_manifest"})
    out = bytearray()
    buf = bytearray(777)  # odd reads straddle headers and data
    while n := tap.readinto(memoryview(buf)):
        out += buf[:n]
    assert bytes(out) == raw.getvalue()
    assert tap.files == 3
    assert bytes(tap.members["backup_label"]) == b"START WAL LOCATION: 0/2000028"
    assert bytes(tap.members["backup_manifest"]) == b'{"WAL-Ranges": []}'


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FilesystemStorage(tmp_path / "repo"), "unit-key")


def push(repo: Repository, tmp_path: Path, name: str, content: bytes | None = None) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else name.encode() * 4000)
    WalArchive(repo, "db").push(path)


def fake_base(repo: Repository, start: int, finished: datetime) -> str:
    """A physical backup's manifest (streams empty: only its WAL facts matter here)."""
    backup_id = new_backup_id(finished)
    extra = {"start_segment": seg(start), "end_segment": seg(start), "end_lsn": names.format_lsn(start * SEG + 200),
             "wal_segment_size": SEG, "server_major": 15, "timeline": 1}
    repo.save_manifest({"format": "dbfleet-manifest", "version": 1, "backup_id": backup_id, "database_id": "db",
                        "kind": "postgresql", "started_at": finished.isoformat(), "finished_at": finished.isoformat(),
                        "duration_seconds": 1, "dump": {"extra": extra}, "streams": [], "stats": {},
                        "options": {"method": "physical"}})
    return backup_id


def test_push_is_idempotent_and_refuses_other_content_under_the_same_name(repo: Repository, tmp_path: Path) -> None:
    push(repo, tmp_path, seg(3))
    push(repo, tmp_path, seg(3))  # same bytes again: success
    with pytest.raises(WalConflict, match="different file"):
        push(repo, tmp_path, seg(3), b"other" * 100)
    out = tmp_path / "fetched"
    assert WalArchive(repo, "db").fetch(seg(3), out) and out.read_bytes() == seg(3).encode() * 4000
    assert not WalArchive(repo, "db").fetch(seg(9), tmp_path / "missing")


def test_prune_keeps_the_wal_of_kept_base_backups_and_collects_the_rest(repo: Repository, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    old = fake_base(repo, 2, now - timedelta(days=3))
    new = fake_base(repo, 5, now - timedelta(hours=1))
    for n in range(1, 8):
        push(repo, tmp_path, seg(n))
    result = prune(repo, RetentionPolicy(last=1), None, now=now)
    assert result["forgotten"] == [f"db/{old}"] and result["wal_forgotten"] == 4  # segments 1-4
    archive = WalArchive(repo, "db")
    assert archive.names() == [seg(n) for n in range(5, 8)]
    for name in archive.names():  # garbage collection kept every chunk of the remaining WAL
        assert archive.fetch(name, tmp_path / "check")
    assert verify(repo, "db", read_data=True)["ok"]
    assert new in [b for _d, b in repo.backup_ids("db")]


def test_a_pitr_window_keeps_the_base_backup_before_it(repo: Repository, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    old = fake_base(repo, 2, now - timedelta(days=3))
    fake_base(repo, 5, now - timedelta(hours=1))
    for n in range(1, 8):
        push(repo, tmp_path, seg(n))
    result = prune(repo, RetentionPolicy(last=1), None, now=now, pitr_windows={"db": "7d"})
    assert result["forgotten"] == [] and result["wal_forgotten"] == 1  # only segment 1, before the old base
    assert any(k["backup"] == f"db/{old}" and "pitr window 7d" in k["reasons"] for k in result["kept"])


def test_a_gap_is_reported_by_verify_and_refused_by_the_wal_plan(repo: Repository, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    fake_base(repo, 2, now - timedelta(hours=1))
    for n in (2, 3, 5):
        push(repo, tmp_path, seg(n))
    report = verify(repo, "db")
    assert not report["ok"] and "WAL gap" in report["problems"][0]["problem"] and seg(4) in report["problems"][0]["problem"]
    base: dict[str, Any] = repo.load_manifest("db", repo.backup_ids("db")[0][1])
    with pytest.raises(RestoreRefused, match=f"WAL gap.*{seg(4)} is missing"):
        plan_wal(repo, "db", base, RecoveryTarget("latest"))
    assert plan_wal(repo, "db", base, RecoveryTarget("lsn", names.format_lsn(3 * SEG + 10)))["segments"] == 2
    with pytest.raises(RestoreRefused, match="after the newest archived WAL"):
        plan_wal(repo, "db", base, RecoveryTarget("time", (now + timedelta(hours=1)).isoformat()))


def test_a_pitr_restore_outside_the_configured_restore_dirs_or_as_a_chosen_os_user_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from engines.config import parse_config
    from engines.errors import ConfigError
    from workers import physical, runtime

    cfg = {"fleet": {"state_dir": str(tmp_path / "state")},
           "storage": {"repo": {"type": "filesystem", "path": str(tmp_path / "repo")}},
           "database_scripts": {"backup": {"storage": "repo", "restore_dirs": [str(tmp_path / "allowed")]}},
           "databases": {"pg": {"kind": "postgresql", "host": "127.0.0.1"}}}
    path = tmp_path / "dbfleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DBFLEET_CONFIG", str(path))
    runtime.reset()
    try:
        db = parse_config(path.read_text()).databases["pg"]
        for data_dir in ("/etc/postgresql-evil", str(tmp_path / "allowed" / ".." / "elsewhere")):
            with pytest.raises(ConfigError, match="data_dir: .* outside the directories the config allows"):
                physical.do_pitr_restore(db, {"latest": True, "data_dir": data_dir, "port": 1})
        with pytest.raises(ConfigError, match="os_user: the OS user .* comes from the config"):
            physical.do_pitr_restore(db, {"latest": True, "data_dir": str(tmp_path / "allowed" / "x"),
                                          "os_user": "root", "port": 1})
    finally:
        runtime.reset()
