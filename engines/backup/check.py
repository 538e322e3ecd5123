"""``verify``: structure (manifests open, referenced chunks exist) and, with read_data, every byte."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engines.backup.locks import SHARED, RepoLock
from engines.backup.repository import Repository
from engines.errors import DbfleetError
from engines.tracing import traced

MAX_REPORTED = 50


@traced("backup.verify", lambda repo, database_id=None, *a, **k: {"database_id": database_id or "*"})
def verify(repo: Repository, database_id: str | None = None, backup_id: str | None = None, *,
           read_data: bool = False, subset: float = 100.0, seed: int | None = None,
           threads: int = 4) -> dict[str, Any]:
    """Check backups; every problem names the object and the backup that needs it."""
    problems: list[dict[str, str]] = [{"backup": "(repository)", "object": slot.split(": ", 1)[0],
                                       "problem": f"unreadable key slot, skipped: {slot.split(': ', 1)[-1]}"}
                                      for slot in repo.unreadable_slots]
    with RepoLock(repo.storage, SHARED, "verify", wait=600):
        stored = repo.chunk_sizes()
        users: dict[str, set[str]] = {}
        lengths: dict[str, int] = {}
        ids = [p for p in repo.backup_ids(database_id) if backup_id in (None, p[1]) or p[1].startswith(backup_id)]
        for db_id, b_id in ids:
            name = f"{db_id}/{b_id}"
            try:
                manifest = repo.load_manifest(db_id, b_id)
            except DbfleetError as exc:
                problems.append({"backup": name, "object": f"backups/{name}", "problem": str(exc)})
                continue
            for stream in manifest["streams"]:
                for cid, length in stream["chunks"]:
                    users.setdefault(cid, set()).add(name)
                    lengths[cid] = length
                    if cid not in stored:
                        problems.append({"backup": name, "object": repo.chunk_key(cid),
                                         "problem": f"chunk missing (stream {stream['name']})"})
        for db_id, b_id in repo.orphan_manifests(database_id):
            if backup_id in (None, b_id) or b_id.startswith(backup_id):
                problems.append({"backup": f"{db_id}/{b_id}", "object": repo.manifest_key(db_id, b_id),
                                 "problem": "manifest not in the index (a backup killed while finishing, "
                                            "or its index entry was deleted): not listed, not restorable by id"})
        to_read = sorted(c for c in users if c in stored)
        if read_data and subset < 100:
            rng = random.Random(seed)
            to_read = rng.sample(to_read, max(1, round(len(to_read) * subset / 100))) if to_read else []
        read_bytes = 0
        if read_data:
            with ThreadPoolExecutor(threads) as pool:
                for cid, error, size in pool.map(lambda c: _read(repo, c, lengths[c]), to_read):
                    read_bytes += size
                    if error:
                        problems.append({"backup": ", ".join(sorted(users[cid])), "object": repo.chunk_key(cid),
                                         "problem": error})
        from engines.backup.wal.hooks import verify_archives  # WAL continuity and chunks (docs/pitr.md)

        problems += verify_archives(repo, database_id, stored, read_data)
    return {"ok": not problems, "backups_checked": len(ids), "chunks_referenced": len(users),
            "chunks_read": len(to_read) if read_data else 0, "bytes_read": read_bytes,
            "read_data": read_data, "subset_percent": subset if read_data else None,
            "problems": problems[:MAX_REPORTED], "problem_count": len(problems)}


def _read(repo: Repository, chunk_id: str, length: int) -> tuple[str, str | None, int]:
    try:
        return chunk_id, None, len(repo.get_chunk(chunk_id, length))
    except DbfleetError as exc:
        return chunk_id, str(exc), 0
