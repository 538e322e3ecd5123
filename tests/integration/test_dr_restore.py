"""BACKUP_RESTORE on real PostgreSQL 15: no replica. The primary archives into a filesystem repository with
the real ``dbfleet wal push``; failover restores the newest physical backup + every archived segment into
the configured data directory and port, starts it as the primary and runs the redirect hook; a drill
measures RTO (restore time) and RPO (markers lost) against the targets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.backup.physical.backup import run_physical_backup
from engines.dr.dispatch import engine_for
from engines.dr.drill import drill
from engines.dr.failover import failover as pg_failover
from engines.dr.models import DRStrategy
from engines.dr.observe import observe
from engines.dr.setup import setup
from tests.integration.dr_archive import Archive, switch_and_archive
from tests.integration.test_dr_pg import Cluster, Group, dr_world, write_marker

pytestmark = pytest.mark.integration


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, object]]:
    """test_dr_pg's world: Redis coordinator, history, a postgres-owned root; the canary checked at the end."""
    yield from dr_world(monkeypatch, caplog)


def _restore_group(env: dict[str, object], monkeypatch: pytest.MonkeyPatch, **cfg: object) -> tuple[Group, Archive,
                                                                                                     Cluster]:
    root = env["root"]
    archive = Archive(root, "p")  # type: ignore[arg-type]
    archive.use(monkeypatch)
    target = Cluster(root, "r")  # type: ignore[arg-type]  # where failover restores to (nothing there yet)
    group = Group(root, env["coord"], env["history"], 0, conf=archive.archive_conf("p"),  # type: ignore[arg-type]
                  repo_factory=archive.open, strategy=DRStrategy.BACKUP_RESTORE, restore_data_dir=str(target.data),
                  restore_port=target.port, restore_database="r", **cfg)
    group.clusters["r"] = target
    env["groups"].append(group)  # type: ignore[attr-defined]
    return group, archive, target


def test_backup_restore_drill_then_failover_restores_every_archived_marker_and_redirects(
        env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    hook_log = env["root"] / "redirect.txt"  # type: ignore[operator]
    group, archive, target = _restore_group(env, monkeypatch, rto_minutes=0.0001, rpo_minutes=5,
                                            redirect_command=["sh", "-c", f'echo "$DBFLEET_DR_NEW_PORT" > {hook_log}'])
    primary = group.primary
    refused = setup(group.ctx)  # nothing to restore yet: said so, with the command that fixes it
    assert refused.status == "failed" and "backups run p --physical" in refused.detail
    write_marker(primary, 1)
    run_physical_backup(archive.open(), primary.db)
    archive.chown_tree(archive.repo_dir)
    switch_and_archive(primary.sql)
    ready = setup(group.ctx)
    assert ready.status == "done", ready.detail

    practice = drill(group.ctx, rate=20.0)  # a restore into a scratch directory while markers are written
    m = practice.measures
    assert m["markers_acknowledged"] > 5 and isinstance(m["rpo_markers"], int), practice.detail
    assert m["restore_seconds"] > 0 and m["rto_seconds"] >= m["restore_seconds"]
    assert practice.status == "failed" and "RTO" in practice.detail  # a 6 ms RTO target cannot be met
    assert not list(primary.data.parent.glob("dbfleet-drill-*"))  # the scratch copy is gone
    assert primary.sql("SELECT to_regclass('dbfleet_dr_restore_drill_markers')") == [(None,)]

    for seq in range(2, 21):  # archived: restored by the failover
        write_marker(primary, seq)
    last = switch_and_archive(primary.sql)
    for seq in range(21, 26):  # never archived: lost, and the estimate says so
        write_marker(primary, seq)
    status = observe(group.ctx)
    assert status.primary_reachable and not status.problems, status.problems
    primary.kill9()
    assert engine_for(group.ctx).failover is not pg_failover  # the group's strategy picks the restore engine
    moved = engine_for(group.ctx).failover(group.ctx, reason="test: primary lost")
    assert moved.status == "promoted", moved.detail
    assert moved.new_primary == "r" and moved.old_primary == "p" and moved.data_loss_bytes
    assert moved.measures["restore_seconds"] > 0 and any(last in s for s in moved.steps), moved.steps
    have = {r[0] for r in target.sql("SELECT seq FROM h9_markers")}
    assert set(range(1, 21)) <= have and not have & set(range(21, 26))
    write_marker(target, 100)  # the restored server is the primary now
    assert hook_log.read_text().strip() == str(target.port)  # the redirect hook was told where to go
    assert group.ctx.current_primary() == "r"


def test_backup_restore_without_a_restore_target_is_refused_naming_the_missing_settings(
        env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    group = Group(env["root"], env["coord"], env["history"], 0,  # type: ignore[arg-type]
                  strategy=DRStrategy.BACKUP_RESTORE)
    env["groups"].append(group)  # type: ignore[attr-defined]
    event = setup(group.ctx)
    assert event.status == "failed"
    assert all(k in event.detail for k in ("restore_data_dir", "restore_port", "restore_database"))
