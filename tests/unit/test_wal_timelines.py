"""Timeline histories and continuity across a promotion (engines/backup/wal/timelines.py, continuity.py)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engines.backup.physical import inplace
from engines.backup.wal import continuity, names
from engines.backup.wal.timelines import Leg, parse_history, path_from
from engines.config import DatabaseBackupConfig, DatabaseConfig
from engines.errors import ConfigError, RestoreRefused

SEG = names.DEFAULT_SEGMENT_SIZE
# timeline 2 branched from 1 in segment 5, timeline 3 from 2 in segment 8
HIST2 = "1\t0/5000100\tno recovery target specified\n"
HIST3 = "1\t0/5000100\tno recovery target specified\n\n2\t0/8000200\tbefore 2026-11-29 14:03:00+00\n"


def seg(tli: int, n: int) -> str:
    return names.segment_name(tli, n)


def test_a_history_file_gives_every_leg_with_its_switch_points() -> None:
    legs = parse_history(3, HIST3)
    assert [(leg.tli, leg.begin, leg.end) for leg in legs] == [
        (1, 0, 0x5000100), (2, 0x5000100, 0x8000200), (3, 0x8000200, None)]


def test_latest_is_the_newest_timeline_that_left_the_base_after_its_end() -> None:
    histories = {2: parse_history(2, HIST2), 3: parse_history(3, HIST3)}
    assert path_from(1, 0x3000000, histories)[-1].tli == 3
    # a base backup that ended on timeline 1 after timeline 2 had branched off cannot follow it
    assert path_from(1, 0x6000000, histories) == [Leg(1, 0, None)]
    assert [leg.tli for leg in path_from(2, 0x6000000, histories)] == [2, 3]


def test_a_timeline_switch_is_no_gap_and_the_new_timeline_is_followed() -> None:
    histories = {2: parse_history(2, HIST2)}
    path = path_from(1, 0x3000000, histories)
    # timeline 1 went on to segment 7 (the abandoned future); timeline 2 holds 5.. from the switch
    archived = [seg(1, n) for n in range(3, 8)] + [seg(2, n) for n in range(5, 10)] + ["00000002.history"]
    run = continuity.check(archived, seg(1, 3), SEG, path)
    assert run.ok and run.newest == seg(2, 9) and run.timeline == 2
    assert run.expected(4) == seg(1, 4) and run.expected(5) == seg(2, 5)
    alone = continuity.check(archived, seg(1, 3), SEG)  # without the history: stuck on timeline 1
    assert alone.newest == seg(1, 7)


def test_a_missing_segment_on_the_new_timeline_is_a_gap_even_when_the_old_one_has_it() -> None:
    path = path_from(1, 0x3000000, {2: parse_history(2, HIST2)})
    archived = [seg(1, n) for n in range(3, 8)] + [seg(2, n) for n in (5, 7, 8)]
    run = continuity.check(archived, seg(1, 3), SEG, path)
    assert not run.ok and run.missing == [seg(2, 6)] and run.last_contiguous == seg(2, 5)


def test_a_time_target_uses_the_files_of_the_path_only() -> None:
    path = path_from(1, 0x3000000, {2: parse_history(2, HIST2)})
    run = continuity.check([seg(1, n) for n in range(3, 8)] + [seg(2, n) for n in range(5, 8)], seg(1, 3), SEG, path)
    pushed = {seg(1, n): f"2026-11-29T10:0{n}:00+00:00" for n in range(3, 8)}  # the old future, pushed early
    pushed |= {seg(2, n): f"2026-11-29T11:0{n}:00+00:00" for n in range(5, 8)}
    when = datetime(2026, 11, 29, 11, 5, 30, tzinfo=timezone.utc)
    assert continuity.first_pushed_after(pushed, run, when) == seg(2, 6)


def _db(**backup: str) -> DatabaseConfig:
    return DatabaseConfig(id="h18a_u", kind="postgresql", host="127.0.0.1", port=1,
                          backup=DatabaseBackupConfig(**backup))  # type: ignore[arg-type]


def test_in_place_needs_the_data_directory_in_the_config_and_refuses_other_dirs_and_ports(tmp_path: Path) -> None:
    from workers.physical import _in_place_dir

    with pytest.raises(ConfigError, match="backup.data_dir"):
        _in_place_dir(_db(), {})
    db = _db(data_dir=str(tmp_path))
    assert _in_place_dir(db, {}) == tmp_path.resolve()
    with pytest.raises(RestoreRefused, match="drop --data-dir"):
        _in_place_dir(db, {"data_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(RestoreRefused, match="drop --port"):
        _in_place_dir(db, {"port": 5999})


def test_in_place_is_refused_over_a_live_postmaster_pid_and_a_missing_directory(tmp_path: Path) -> None:
    db = _db(data_dir=str(tmp_path))
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    with pytest.raises(RestoreRefused, match=f"live process {os.getpid()}"):
        inplace.refuse_if_running(tmp_path, db)
    with pytest.raises(RestoreRefused, match="not a directory"):
        inplace.refuse_if_running(tmp_path / "missing", db)


def test_moving_aside_keeps_every_file_and_put_back_restores_it(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    data.mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("15\n")
    aside = inplace.move_aside(data)
    assert (aside / "PG_VERSION").read_text() == "15\n" and data.is_dir() and not any(data.iterdir())
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    (data / "half-restored").write_text("x")
    inplace.put_back(data, aside)
    assert (data / "PG_VERSION").exists() and not (data / "half-restored").exists() and not aside.exists()


def test_a_restore_disarms_the_recovery_target_an_earlier_restore_left_in_postgresql_auto_conf(tmp_path: Path) -> None:
    from engines.backup.physical.restore import configure
    from engines.backup.physical.target import RecoveryTarget

    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("work_mem = '8MB'\nrecovery_target_time = '2026-11-29 14:03:00+00'\nrecovery_target_timeline = '1'\n")
    configure(tmp_path, RecoveryTarget("latest"), 5999, "dbfleet wal fetch %f %p", timeline=2)
    active = [line for line in auto.read_text().splitlines() if line and not line.startswith("#")]
    assert "work_mem = '8MB'" in active
    assert not any(line.startswith("recovery_target_time ") for line in active)
    assert [line for line in active if line.startswith("recovery_target_timeline")] == ["recovery_target_timeline = '2'"]
    assert (tmp_path / "recovery.signal").exists()


def test_wal_stream_of_a_database_that_is_not_postgresql_is_refused_with_the_reason(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from workers.cli_wal import wal

    config = tmp_path / "dbfleet.yaml"
    config.write_text(f"fleet: {{state_dir: {tmp_path}}}\nstorage: {{r: {{type: filesystem, path: {tmp_path / 'repo'}}}}}\n"
                      "database_scripts: {backup: {storage: r, encryption: false}}\n"
                      "databases:\n  h18a_cache: {kind: redis, host: 127.0.0.1}\n")
    result = CliRunner().invoke(wal, ["stream", "h18a_cache"], env={"DBFLEET_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "WAL archiving is for PostgreSQL" in result.output
    assert not (tmp_path / "wal-stream").exists()


def test_a_pitr_picks_a_base_backup_on_the_way_to_the_newest_timeline_not_one_on_the_abandoned_future() -> None:
    from engines.backup.physical.target import RecoveryTarget
    from engines.backup.physical.walplan import choose_base

    def base(backup_id: str, end: str, finished: str) -> dict[str, object]:
        return {"backup_id": backup_id, "finished_at": finished,
                "dump": {"extra": {"end_lsn": end, "end_segment": names.segment_of(1, names.parse_lsn(end))}}}

    # timeline 2 left timeline 1 at 0/5000100 (a restore); "future" was taken on timeline 1 after that point
    backups = [base("before", "0/3000100", "2026-11-29T10:00:00+00:00"),
               base("future", "0/6000100", "2026-11-29T11:00:00+00:00")]
    target = RecoveryTarget("time", "2026-11-29 12:00:00+00")
    assert choose_base(backups, target, histories={2: parse_history(2, HIST2)})["backup_id"] == "before"
    assert choose_base(backups, target)["backup_id"] == "future"  # without histories: simply the newest
    assert choose_base(backups, target, histories={2: parse_history(2, HIST2)}, timeline=1)["backup_id"] == "future"


def test_an_explicit_timeline_is_followed_or_refused_when_it_does_not_descend_from_the_base() -> None:
    from engines.backup.wal.timelines import path_to
    from workers.physical import _timeline

    histories = {2: parse_history(2, HIST2), 3: parse_history(3, HIST3)}
    assert [leg.tli for leg in path_to(1, 0x3000000, histories, 2) or []] == [1, 2]
    assert path_to(1, 0x3000000, histories, 1) == [Leg(1, 0, None)]  # the old timeline to its end
    assert path_to(1, 0x6000000, histories, 2) is None  # timeline 2 left before this base backup ended
    assert path_to(1, 0x3000000, histories, 9) is None
    assert _timeline({"timeline": "2"}) == 2 and _timeline({}) is None
    with pytest.raises(RestoreRefused, match="give a timeline number"):
        _timeline({"timeline": "latest"})
