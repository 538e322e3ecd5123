"""``prune``: forget backups the retention policy does not keep, then delete unreferenced chunks.

Runs under the exclusive repository lock, so no backup can be writing (or planning to reuse)
chunks meanwhile. Chunks of interrupted backups (no manifest) are unreferenced and go too.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from engines.backup.locks import EXCLUSIVE, STALE_AFTER, RepoLock
from engines.backup.repository import Repository
from engines.backup.retention import plan
from engines.backup.wal.hooks import keep_for_pitr, prune_wal, wal_chunk_refs
from engines.config import RetentionPolicy
from engines.tracing import traced


@traced("backup.prune")
def prune(repo: Repository, policy: RetentionPolicy | None, retention_days: int | None, *,
          database_id: str | None = None, dry_run: bool = False, now: datetime | None = None,
          lock_wait: float = 0.0, stale_after: float = STALE_AFTER,
          pitr_windows: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Apply retention per database (archived WAL that no kept base backup or PITR window needs goes too),
    then garbage-collect; ``dry_run`` only reports. Temporary files of uploads that crashed longer ago than
    the lock staleness (``stale_after``) are removed too."""
    with RepoLock(repo.storage, EXCLUSIVE, "prune", wait=lock_wait, stale_after=stale_after):
        by_db: dict[str, list[str]] = {}
        for db_id, b_id in repo.backup_ids():
            by_db.setdefault(db_id, []).append(b_id)
        kept: list[dict[str, Any]] = []
        forgotten: list[str] = []
        for db_id, ids in sorted(by_db.items()):
            if database_id and db_id != database_id:
                kept += [{"backup": f"{db_id}/{b}", "reasons": ["other database"]} for b in ids]
                continue
            keep = plan(ids, policy, retention_days, now)
            keep_for_pitr(repo, db_id, keep, (pitr_windows or {}).get(db_id), now)  # PITR (docs/pitr.md)
            kept += [{"backup": f"{db_id}/{b}", "reasons": r} for b, r in sorted(keep.items())]
            forgotten += [f"{db_id}/{b}" for b in ids if b not in keep]
        if not dry_run:
            for name in forgotten:
                repo.delete_manifest(*name.split("/"))
        wal_forgotten = prune_wal(repo, [k["backup"] for k in kept], dry_run=dry_run)
        gc = collect_garbage(repo, dry_run=dry_run, skip={tuple(f.split("/")) for f in forgotten},
                             skip_wal=set(wal_forgotten))
        temporary = [] if dry_run else repo.storage.remove_temporary(stale_after)
    return {"dry_run": dry_run, "kept": kept, "forgotten": forgotten, "wal_forgotten": len(wal_forgotten), **gc,
            "temporary_files_removed": len(temporary)}


def collect_garbage(repo: Repository, *, dry_run: bool, skip: set[tuple[str, ...]],
                    skip_wal: set[str] | None = None) -> dict[str, Any]:
    """Delete chunks no remaining manifest references. A manifest that cannot be read aborts GC."""
    referenced: set[str] = set()
    for db_id, b_id in repo.backup_ids():
        if (db_id, b_id) in skip:  # forgotten in a dry run
            continue
        manifest = repo.load_manifest(db_id, b_id)  # raises: never delete on a partial view
        for stream in manifest["streams"]:
            referenced.update(cid for cid, _len in stream["chunks"])
    for db_id, b_id in repo.orphan_manifests():  # not listed, kept for `verify` to report: keep their chunks
        key = repo.manifest_key(db_id, b_id)
        manifest = json.loads(repo.cipher.open(repo.storage.get(key), key))
        for stream in manifest["streams"]:
            referenced.update(cid for cid, _len in stream["chunks"])
    referenced |= wal_chunk_refs(repo, skip_wal or set())  # archived WAL is referenced by its index objects
    stored = repo.chunk_sizes()
    garbage = [cid for cid in stored if cid not in referenced]
    if not dry_run:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: repo.storage.delete(repo.chunk_key(c)), garbage))
    return {"chunks_deleted": len(garbage), "bytes_freed": sum(stored[c] for c in garbage),
            "chunks_remaining": len(stored) - len(garbage),
            "bytes_remaining": sum(size for c, size in stored.items() if c in referenced)}
