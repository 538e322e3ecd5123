"""WARM_STANDBY on real PostgreSQL 15 clusters: the primary archives into a filesystem repository with the
real ``dbfleet wal push``; the standby is built from the repository's physical base backup and fed only by
``restore_command = dbfleet wal fetch`` (no primary_conninfo, no slot); failover replays every archived
segment before promoting. The canary (replication role's password) is checked by the ``env`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.backup.physical.backup import run_physical_backup
from engines.dr.failover import failover
from engines.dr.models import DRStrategy
from engines.dr.observe import metrics, observe
from engines.dr.rejoin import rejoin
from engines.dr.setup import setup
from tests.integration.dr_archive import Archive, switch_and_archive
from tests.integration.test_dr_pg import Group, dr_world, wait_for, write_marker

pytestmark = pytest.mark.integration


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, object]]:
    """test_dr_pg's world: Redis coordinator, history, a postgres-owned root; the canary checked at the end."""
    yield from dr_world(monkeypatch, caplog)


def _warm_group(env: dict[str, object], monkeypatch: pytest.MonkeyPatch, **cfg: object) -> tuple[Group, Archive]:
    archive = Archive(env["root"], "p")  # type: ignore[arg-type]
    archive.use(monkeypatch)
    group = Group(env["root"], env["coord"], env["history"], 1, conf=archive.archive_conf("p"),  # type: ignore[arg-type]
                  repo_factory=archive.open, strategy=DRStrategy.WARM_STANDBY, **cfg)
    env["groups"].append(group)  # type: ignore[attr-defined]
    return group, archive


def test_warm_standby_replays_the_archive_and_fails_over_with_every_archived_marker(
        env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    group, archive = _warm_group(env, monkeypatch, rpo_minutes=5)
    primary, standby = group.primary, group.standbys[0]
    write_marker(primary, 1)
    run_physical_backup(archive.open(), primary.db)  # the repository's base backup the standby starts from
    archive.chown_tree(archive.repo_dir)
    switch_and_archive(primary.sql)
    event = setup(group.ctx)
    assert event.status == "done", event.detail
    assert any("from the repository" in s for s in event.steps), event.steps
    auto_conf = (standby.data / "postgresql.auto.conf").read_text()
    assert "restore_command" in auto_conf and "wal fetch" in auto_conf and "primary_conninfo" not in auto_conf
    for seq in range(2, 21):
        write_marker(primary, seq)
    switch_and_archive(primary.sql)
    assert wait_for(lambda: standby.sql("SELECT count(*) FROM h9_markers") == [(20,)], 120)
    assert standby.sql("SELECT count(*) FROM pg_stat_wal_receiver") == [(0,)]  # fed by the archive alone
    status = observe(group.ctx)
    node = status.node("s1")
    assert node is not None and node.role == "standby" and node.archived_wal is not None
    assert node.lag_seconds is not None and node.rpo_budget_ratio is not None and node.archive_lag_seconds is not None
    assert not any("not streaming" in p for p in status.problems), status.problems
    names = {name for name, _l, _v in metrics(status)}
    assert "dbfleet_dr_archive_replay_lag_seconds" in names and "dbfleet_dr_rpo_budget_ratio" in names
    assert "dbfleet_dr_standby_streaming" not in names  # no "not streaming" alert for a standby that never streams

    for seq in range(21, 41):  # archived: the standby must have every one of them after failover
        write_marker(primary, seq)
    last = switch_and_archive(primary.sql)
    for seq in range(41, 46):  # never archived: lost with the primary, and the estimate says so
        write_marker(primary, seq)
    observe(group.ctx)
    group.primary.kill9()
    moved = failover(group.ctx, reason="warm standby test")
    assert moved.status == "promoted", moved.detail
    assert moved.new_primary == "s1" and moved.data_loss_bytes and moved.data_loss_bytes > 0
    assert any(f"up to {last}" in s for s in moved.steps), moved.steps
    have = {r[0] for r in standby.sql("SELECT seq FROM h9_markers")}
    assert set(range(1, 41)) <= have  # every marker up to the last archived segment
    assert not have & set(range(41, 46))
    write_marker(standby, 100)  # the promoted warm standby accepts writes
    assert standby.sql("SELECT pg_is_in_recovery()") == [(False,)]

    primary.start()  # fenced by the failover: in recovery; rejoins as the new primary's warm standby
    back = rejoin(group.ctx, "p")
    assert back.status == "done", (back.detail, back.steps)
    assert "primary_conninfo" not in (primary.data / "postgresql.auto.conf").read_text()
    switch_and_archive(standby.sql)  # the new primary archives (timeline 2) into the same archive
    assert wait_for(lambda: primary.sql("SELECT count(*) FROM h9_markers WHERE seq = 100") == [(1,)], 120)


def test_warm_standby_without_a_repository_is_refused_with_what_to_configure(
        env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    group = Group(env["root"], env["coord"], env["history"], 1,  # type: ignore[arg-type]
                  strategy=DRStrategy.WARM_STANDBY)
    env["groups"].append(group)  # type: ignore[attr-defined]
    event = setup(group.ctx)
    assert event.status == "failed" and "repository" in event.detail
    assert not (group.standbys[0].data / "PG_VERSION").exists()  # nothing half-built left behind
