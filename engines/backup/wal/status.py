"""The state of a WAL archive and its verification: newest segment and age, continuity, damaged files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engines.backup.repository import Repository, utcnow
from engines.backup.wal import continuity, names
from engines.backup.wal.archive import WalArchive
from engines.errors import DbfleetError


def _continuities(archive: WalArchive, archived: list[str]) -> list[dict[str, Any]]:
    from engines.backup.physical.backup import physical_backups
    from engines.backup.wal.timelines import read_histories

    out = []
    histories = read_histories(archive, archived)
    for manifest in physical_backups(archive.repo, archive.database_id):
        run = continuity.from_base(archive, archived, manifest["dump"]["extra"], histories)
        out.append({"backup_id": manifest["backup_id"], **run.to_dict()})
    return out


def archive_status(archive: WalArchive) -> dict[str, Any]:
    """Files, the newest segment and its age, and continuity from each base backup to the newest segment."""
    archived = archive.names()
    segments = [n for n in archived if names.is_segment(n)]
    newest = max(segments, key=lambda n: (names.timeline(n), n[8:])) if segments else None
    record = archive.load(newest) if newest else None
    newest_at = record["pushed_at"] if record else None
    age = (utcnow() - datetime.fromisoformat(newest_at)).total_seconds() if newest_at else None
    bases = _continuities(archive, archived)
    return {"database_id": archive.database_id, "files": len(archived), "newest_segment": newest,
            "newest_at": newest_at, "age_seconds": age, "base_backups": bases,
            "ok": all(b["ok"] for b in bases)}


def verify_wal(repo: Repository, database_id: str, *, stored: dict[str, int],
               read_data: bool = False) -> tuple[list[dict[str, str]], set[str]]:
    """Problems of ``database_id``'s WAL archive (gaps after a base backup, missing or damaged chunks)
    and the chunk ids its files reference."""
    archive = WalArchive(repo, database_id)
    archived = archive.names()
    problems: list[dict[str, str]] = []
    refs: set[str] = set()
    for base in _continuities(archive, archived):
        if not base["ok"]:
            what = f"{base['missing_count']} segments missing: {', '.join(base['missing'][:5])}"
            problems.append({"backup": f"{database_id}/{base['backup_id']}", "object": f"wal/{database_id}/",
                             "problem": f"WAL gap after base backup (from {base['start']}, unbroken to "
                                        f"{base['last_contiguous']}): {what}"})
    for name in archived:
        problem = _check_file(archive, name, stored, refs, read_data)
        if problem:
            problems.append({"backup": f"{database_id}/wal", "object": archive.key(name), "problem": problem})
    return problems, refs


def _check_file(archive: WalArchive, name: str, stored: dict[str, int], refs: set[str], read_data: bool) -> str | None:
    try:
        record = archive.load(name)
        if record is None:
            return "index vanished"
        chunks = record["chunks"]
        refs.update(cid for cid, _len in chunks)
        missing = [cid for cid, _len in chunks if cid not in stored]
        if missing:
            return f"WAL file {name}: {len(missing)} chunks missing"
        if read_data:
            for cid, length in chunks:
                archive.repo.get_chunk(cid, length)
    except DbfleetError as exc:
        return f"WAL file {name}: {exc}"
    return None
