"""Synchronous, warm-standby and backup-restore settings of a DR group: validation and the derived values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engines.dr.models import DRConfiguration, DRStrategy, NodeStatus
from engines.dr.sync import names_setting
from engines.dr.warm import replayed_archive

SITES = {"primary_site": "p", "secondary_sites": ["s1", "s2"]}


def test_synchronous_standby_names_quote_every_application_name() -> None:
    assert names_setting(["dbfleet_g_s1", 'odd"name']) == 'ANY 1 ("dbfleet_g_s1", "odd""name")'
    assert names_setting([]) == ""  # no standby: asynchronous rather than writes that never return


def test_synchronous_needs_a_streaming_standby_and_a_waiting_commit_level() -> None:
    assert DRConfiguration(synchronous=True, **SITES).synchronous_commit == "on"
    with pytest.raises(ValidationError, match="needs strategy hot_standby"):
        DRConfiguration(synchronous=True, strategy=DRStrategy.WARM_STANDBY, **SITES)
    with pytest.raises(ValidationError, match="remote_apply"):
        DRConfiguration(synchronous=True, synchronous_commit="local", **SITES)


def test_backup_restore_needs_no_secondary_and_a_valid_port() -> None:
    cfg = DRConfiguration(strategy="backup_restore", primary_site="p", restore_port=5499, restore_database="r")
    assert cfg.strategy == DRStrategy.BACKUP_RESTORE and cfg.secondary_sites == []
    with pytest.raises(ValidationError, match="restore_port"):
        DRConfiguration(strategy="backup_restore", primary_site="p", restore_port=70000)


def test_a_warm_standby_has_replayed_the_archive_once_it_reached_the_newest_segment() -> None:
    at = NodeStatus(database="s", reachable=True, role="standby", lsn="0/3000028")
    behind = NodeStatus(database="s", reachable=True, role="standby", lsn="0/1000028")
    assert replayed_archive(at, "000000010000000000000003")
    assert not replayed_archive(behind, "000000010000000000000003")
    assert replayed_archive(behind, None)  # nothing archived: nothing to wait for


def test_setup_never_copies_over_a_primary_or_a_stray_directory(tmp_path: Path) -> None:
    """Hot and warm standby setup share one check: an existing standby is kept (idempotent), a primary's
    cluster or a non-empty non-cluster directory is refused, an empty or missing one is set up."""
    from engines.dr.setup import SetupError, standby_exists

    assert standby_exists(tmp_path / "missing") is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert standby_exists(empty) is False
    standby = tmp_path / "standby"
    standby.mkdir()
    (standby / "PG_VERSION").write_text("15\n")
    (standby / "standby.signal").touch()
    assert standby_exists(standby) is True
    (standby / "standby.signal").unlink()
    with pytest.raises(SetupError, match="not a standby; refusing"):
        standby_exists(standby)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("keep me")
    with pytest.raises(SetupError, match="not empty and is not a PostgreSQL data directory"):
        standby_exists(stray)
    assert (stray / "notes.txt").read_text() == "keep me"
