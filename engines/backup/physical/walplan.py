"""Before a point-in-time restore: pick the base backup and prove the archive holds the WAL it needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engines.backup.physical.target import RecoveryTarget
from engines.backup.repository import Repository
from engines.backup.wal import continuity, names
from engines.backup.wal.archive import WalArchive
from engines.backup.wal.timelines import Leg, path_to
from engines.errors import BackupNotFound, RestoreRefused


def choose_base(backups: list[dict[str, Any]], target: RecoveryTarget, backup_id: str | None = None,
                histories: dict[int, list[Leg]] | None = None, timeline: int | None = None) -> dict[str, Any]:
    """The newest base backup that ends before the target (or the one named ``backup_id``), preferring those
    from which recovery reaches the newest timeline: after a restore, the base backups taken on the
    abandoned future of the old timeline cannot reach a point of the new one."""
    if not backups:
        raise BackupNotFound("no physical backup of this database; take one with `dbfleet backups run --physical`")
    if backup_id:
        named = [m for m in backups if m["backup_id"].startswith(backup_id)]
        if len(named) != 1:
            raise BackupNotFound(f"{len(named)} physical backups match {backup_id!r}")
        return named[0]
    usable = backups
    if target.kind == "time":
        when = target.time()
        usable = [m for m in backups if datetime.fromisoformat(m["finished_at"]) <= when]
    elif target.kind == "lsn":
        lsn = names.parse_lsn(str(target.value))
        usable = [m for m in backups if names.parse_lsn(m["dump"]["extra"]["end_lsn"]) <= lsn]
    if timeline is not None:  # only base backups from which that timeline can be reached
        usable = [m for m in usable if _reaches(m, histories or {}, timeline) == timeline]
        if not usable:
            raise BackupNotFound(f"no base backup before {target.describe()} can reach timeline {timeline} (its "
                                 "history must leave the backup's timeline after the backup ended); known "
                                 f"timelines: {', '.join(str(t) for t in sorted({1, *(histories or {})}))}")
    elif histories and usable:
        newest = max([*histories, *(names.timeline(m["dump"]["extra"]["end_segment"]) for m in usable)])
        usable = [m for m in usable if _reaches(m, histories) == newest] or usable
    if not usable:
        oldest = backups[0]
        raise BackupNotFound(f"no base backup ends before {target.describe()}: the oldest, "
                             f"{oldest['backup_id']}, finished at {oldest['finished_at']} "
                             f"(end LSN {oldest['dump']['extra']['end_lsn']})")
    return usable[-1]


def _reaches(manifest: dict[str, Any], histories: dict[int, list[Leg]], timeline: int | None = None) -> int | None:
    """The timeline recovery from this base backup ends on ('latest', or ``timeline`` when it can get there)."""
    extra = manifest["dump"]["extra"]
    path = path_to(names.timeline(extra["end_segment"]), names.parse_lsn(extra["end_lsn"]), histories, timeline)
    return None if path is None else path[-1].tli


def plan_wal(repo: Repository, database_id: str, base: dict[str, Any], target: RecoveryTarget,
             timeline: int | None = None) -> dict[str, Any]:
    """The archived segments recovery needs from ``base`` to ``target``; refuses on a gap or missing chunks."""
    extra = base["dump"]["extra"]
    segsize = int(extra.get("wal_segment_size") or names.DEFAULT_SEGMENT_SIZE)
    archive = WalArchive(repo, database_id)
    archived = archive.names()
    run = continuity.from_base(archive, archived, extra, timeline=timeline)
    until = _needed_until(archive, run, target, segsize)
    last = run.last_contiguous
    if last is None or names.segment_number(last, segsize) < names.segment_number(until, segsize):
        missing = run.missing[0] if run.missing else until
        reach = f"the archive is unbroken only up to {last}" if last else "not even its first segment is archived"
        raise RestoreRefused(
            f"WAL gap: recovery of {database_id} to {target.describe()} from base backup {base['backup_id']} needs "
            f"segments {extra['end_segment']} .. {until}, but {missing} is missing ({reach}). Recovering would stop "
            "early at a point you did not ask for; restore to an earlier target, or from a newer base backup.")
    needed = [run.expected(n, segsize) for n in
              range(names.segment_number(extra["end_segment"], segsize), names.segment_number(until, segsize) + 1)]
    _check_chunks(repo, archive, needed)
    return {"timeline": run.timeline, "target_timeline": run.path[-1].tli, "first_segment": extra["end_segment"],
            "last_needed": until, "segments": len(needed), "newest_archived": run.newest,
            "gaps_after": run.missing_count, "timelines": [leg.to_dict() for leg in run.path]}


def _needed_until(archive: WalArchive, run: continuity.Continuity, target: RecoveryTarget, segsize: int) -> str:
    if target.kind == "immediate":
        return run.start
    if target.kind == "lsn":
        return run.expected(names.parse_lsn(str(target.value)) // segsize, segsize)
    if run.newest is None:
        return run.start
    if target.kind != "time":  # latest, xid, name: where they are is unknown, so every archived segment
        return run.newest
    first = names.segment_number(run.start, segsize)
    pushed = {n: r["pushed_at"] for n in archive.names()
              if names.is_segment(n) and names.segment_number(n, segsize) >= first
              and n == run.expected(names.segment_number(n, segsize), segsize) and (r := archive.load(n)) is not None}
    found = continuity.first_pushed_after(pushed, run, target.time(), segsize)
    if found is None:
        newest = max(pushed.values()) if pushed else "never"
        raise RestoreRefused(f"{target.describe()} is after the newest archived WAL (archived at {newest}); "
                             "wait for the archiver (or run SELECT pg_switch_wal() on the server) and retry, "
                             "or restore with --latest")
    return found


def _check_chunks(repo: Repository, archive: WalArchive, needed: list[str]) -> None:
    stored = repo.chunk_sizes()
    for name in needed:
        record = archive.load(name)
        missing = [cid for cid, _len in (record or {}).get("chunks", []) if cid not in stored]
        if record is None or missing:
            raise RestoreRefused(f"WAL segment {name} is damaged: {len(missing)} of its chunks are missing "
                                 "from the repository (run dbfleet backups verify)")
