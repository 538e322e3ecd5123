"""What verify and prune do about WAL archives (called from engines/backup/check.py and prune.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engines.backup.physical import is_physical
from engines.backup.repository import Repository, utcnow
from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive, archived_databases
from engines.backup.wal.status import verify_wal

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str | None) -> timedelta | None:
    """``"7d"``, ``"36h"``, ``"90m"`` -> a timedelta (None stays None)."""
    if not text:
        return None
    text = text.strip()
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(f"pitr_window {text!r}: write a number and one of s, m, h, d, w (e.g. 7d)")
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


def verify_archives(repo: Repository, database_id: str | None, stored: dict[str, int],
                    read_data: bool) -> list[dict[str, str]]:
    """WAL problems of one database (or all): gaps after base backups, missing or damaged chunks."""
    problems: list[dict[str, str]] = []
    for db_id in archived_databases(repo):
        if database_id in (None, db_id):
            problems += verify_wal(repo, db_id, stored=stored, read_data=read_data)[0]
    return problems


def keep_for_pitr(repo: Repository, database_id: str, keep: dict[str, list[str]], window: str | None,
                  now: datetime | None = None) -> None:
    """Add to ``keep`` the newest base backup finished before ``now - window`` (none: the oldest one),
    so that with the WAL after it every point of the window stays recoverable; then the parents of
    every kept incremental base backup."""
    bases = {m["backup_id"]: m for d, b in repo.backup_ids(database_id)
             if is_physical(m := repo.load_manifest(d, b))}
    span = parse_window(window)
    if span is not None and bases:
        edge = (now or utcnow()) - span
        older = [b for b, m in bases.items() if datetime.fromisoformat(m["finished_at"]) <= edge]
        chosen = older[-1] if older else next(iter(bases))
        keep.setdefault(chosen, []).append(f"pitr window {window}")
    for backup_id in sorted(keep, reverse=True):
        parent = bases.get(backup_id, {}).get("dump", {}).get("extra", {}).get("incremental_of")
        while parent:
            keep.setdefault(parent, []).append(f"parent of incremental {backup_id}")
            parent = bases.get(parent, {}).get("dump", {}).get("extra", {}).get("incremental_of")


def prune_wal(repo: Repository, kept: list[str], *, dry_run: bool) -> list[str]:
    """Delete archived WAL older than every kept base backup of its database; returns the deleted keys.

    ``kept`` names backups as ``db/backup``. A database with a WAL archive but no kept base backup
    keeps its whole archive (nothing says which WAL is still wanted)."""
    by_db: dict[str, list[str]] = {}
    for name in kept:
        db_id, _, b_id = name.partition("/")
        by_db.setdefault(db_id, []).append(b_id)
    deleted = []
    for db_id in archived_databases(repo):
        starts = [m["dump"]["extra"] for b in by_db.get(db_id, [])
                  if is_physical(m := repo.load_manifest(db_id, b))]
        if not starts:
            continue
        segsize = int(starts[0].get("wal_segment_size") or names.DEFAULT_SEGMENT_SIZE)
        oldest = min(names.segment_number(e["start_segment"], segsize) for e in starts)
        archive = WalArchive(repo, db_id)
        for name in archive.names():
            if name.endswith(".history") or names.segment_number(name[:24], segsize) >= oldest:
                continue
            deleted.append(archive.key(name))
            if not dry_run:
                archive.delete(name)
    return deleted


def wal_chunk_refs(repo: Repository, skip: set[str]) -> set[str]:
    """Chunk ids referenced by archived WAL files (minus the index keys in ``skip``)."""
    refs: set[str] = set()
    for db_id in archived_databases(repo):
        archive = WalArchive(repo, db_id)
        for name in archive.names():
            if archive.key(name) in skip:
                continue
            record: dict[str, Any] | None = archive.load(name)  # raises on damage: never GC on a partial view
            refs.update(cid for cid, _len in (record or {}).get("chunks", []))
    return refs
