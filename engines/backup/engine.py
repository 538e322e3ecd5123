"""Backup and restore of one database into/out of a repository."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engines.backup.dumpers.base import Dumper, RestoreOptions, Target
from engines.backup.locks import SHARED, RepoLock
from engines.backup.pipeline import ChunkWriter, StreamRecord, read_stream
from engines.backup.repository import Repository, check_stream_name, new_backup_id, utcnow
from engines.config import Config, DatabaseConfig
from engines.errors import BackupNotFound, ConfigError, RestoreRefused
from engines.kinds import kinds_with, load, supports
from engines.storage import open_storage
from engines.tracing import traced

log = logging.getLogger("dbfleet.backup")

# (bytes done, bytes expected or None)
Progress = Callable[[int, int | None], None]


def dumper_for(db: DatabaseConfig, workdir: Path, *, resolve_password: bool = True) -> Dumper:
    """The dumper of ``db``'s kind; its password is resolved here, in this process. Restores write
    with the target's credentials only, so they pass ``resolve_password=False``."""
    if not supports(db.kind, "dumper"):
        raise ConfigError([(f"databases.{db.id}.kind", f"no backup engine for {db.kind!r}; "
                            f"known: {', '.join(kinds_with('dumper'))}")])
    cls: type[Dumper] = load(db.kind, "dumper")
    return cls(db, db.password() if resolve_password else None, workdir)


def open_repository(cfg: Config, storage_name: str | None = None, *, create: bool = False) -> Repository:
    """The repository of storage target ``storage_name`` (or the backup default), opened with its key."""
    name, scfg = cfg.backup_storage(storage_name)
    storage = open_storage(name, scfg)
    secret = scfg.key_secret(name)
    encryption = cfg.database_scripts.backup.encryption
    if create:
        return Repository.open_or_init(storage, secret, encryption=encryption)
    return Repository.open(storage, secret, expect_encrypted=encryption)


@traced("backup.run", lambda repo, db, *a, **k: {"database_id": db.id})
def run_backup(repo: Repository, db: DatabaseConfig, *, level: int | None = 3, workdir: Path,
               options: dict[str, Any] | None = None, progress: Progress | None = None,
               lock_wait: float = 600.0, threads: int | None = None) -> dict[str, Any]:
    """Dump ``db`` into ``repo``; the backup is visible once its manifest is written, last."""
    with RepoLock(repo.storage, SHARED, f"backup {db.id}", wait=lock_wait):
        known = set(repo.chunk_sizes())
        started, t0 = utcnow(), time.monotonic()
        backup_id = new_backup_id(started)
        dumper = dumper_for(db, workdir)
        expected = _estimate(dumper)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress:
                progress(done[0], expected)

        # object stores are latency-bound: more concurrent PUTs; a local disk is CPU-bound (zstd)
        threads = threads or (6 if repo.storage.scheme == "s3" else 2)
        writer = ChunkWriter(repo, known, level=level, threads=threads, inflight=2 * threads + 4, progress=tick)
        streams: list[StreamRecord] = []

        def write(name: str, fmt: str, reader: Any) -> StreamRecord:
            record = writer.write(name, fmt, reader)
            streams.append(record)
            return record

        try:
            info = dumper.backup(write)
        finally:
            writer.close()
        manifest: dict[str, Any] = {
            "format": "dbfleet-manifest", "version": 1, "repository": repo.id,
            "backup_id": backup_id, "database_id": db.id, "kind": db.kind,
            "started_at": started.isoformat(), "finished_at": utcnow().isoformat(),
            "duration_seconds": round(time.monotonic() - t0, 3),
            "source": {k: v for k, v in db.public().items() if k in ("host", "port", "dbname", "path", "user")},
            "dump": info.to_dict(), "streams": [s.to_dict() for s in streams],
            "stats": _stats(streams), "options": {"compression_level": level, **(options or {})},
        }
        repo.save_manifest(manifest)
    log.info("backup %s of %s: %d bytes, %d new", backup_id, db.id, manifest["stats"]["total_bytes"],
             manifest["stats"]["new_bytes"])
    return summarize(manifest)


def _estimate(dumper: Dumper) -> int | None:
    try:
        return dumper.estimate_bytes()
    except Exception:  # an estimate only feeds the progress bar
        return None


def _stats(streams: list[StreamRecord]) -> dict[str, int]:
    return {"total_bytes": sum(s.size for s in streams), "new_bytes": sum(s.new_bytes for s in streams),
            "stored_bytes": sum(s.stored_bytes for s in streams),
            "chunks": sum(len(s.chunks) for s in streams), "new_chunks": sum(s.new_chunks for s in streams)}


def summarize(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without its chunk lists: what results, history and the CLI show."""
    out = {k: v for k, v in manifest.items() if k != "streams"}
    out["streams"] = [{k: v for k, v in s.items() if k != "chunks"} for s in manifest["streams"]]
    return out


def find_backup(repo: Repository, database_id: str, backup_id: str | None = None) -> dict[str, Any]:
    """The manifest of ``backup_id`` (a full id or a unique prefix), or of the latest backup."""
    ids = [b for d, b in repo.backup_ids(database_id)]
    if not ids:
        raise BackupNotFound(f"no backup of {database_id!r} in {repo.storage.describe()}")
    if backup_id in (None, "", "latest"):
        return repo.load_manifest(database_id, ids[-1])
    matches = [b for b in ids if b.startswith(str(backup_id))]
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)}"
        raise BackupNotFound(f"{what} backups of {database_id!r} match {backup_id!r} "
                             f"(latest: {', '.join(ids[-3:])})")
    return repo.load_manifest(database_id, matches[0])


def _check_space(manifest: dict[str, Any], directory: Path) -> int:
    total = sum(s["size"] for s in manifest["streams"])
    free = shutil.disk_usage(directory).free
    if free < total:
        raise RestoreRefused(f"restore needs {total} bytes of spool space in {directory}, "
                             f"{free} free; set fleet.state_dir or spool_dir elsewhere")
    return int(total)


def _ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """Turn per-chunk byte counts into (done, total) progress calls."""
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    return tick


def spool(repo: Repository, manifest: dict[str, Any], directory: Path,
          progress: Progress | None = None) -> dict[str, Path]:
    """Reassemble and verify every stream into ``directory``; raises before anything is restored."""
    tick = _ticker(progress, _check_space(manifest, directory))
    files = {}
    for stream in manifest["streams"]:
        path = directory / check_stream_name(stream["name"])
        with open(path, "wb") as fh:
            read_stream(repo, stream, fh, progress=tick)
        files[stream["name"]] = path
    return files


@contextmanager
def spooled(repo: Repository, database_id: str, backup_id: str | None, spool_dir: Path, operation: str,
            progress: Progress | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Path], Path]]:
    """Under a shared lock: (manifest, verified stream files, their private directory), removed on exit."""
    with RepoLock(repo.storage, SHARED, f"{operation} {database_id}", wait=600):
        manifest = find_backup(repo, database_id, backup_id)
        spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"dbfleet-{operation}-", dir=spool_dir) as tmp:
            yield manifest, spool(repo, manifest, Path(tmp), progress), Path(tmp)


@traced("backup.restore", lambda repo, source, *a, **k: {"database_id": source.id})
def restore_backup(repo: Repository, source: DatabaseConfig, target: Target, *,
                   backup_id: str | None = None, options: RestoreOptions, spool_dir: Path,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Restore a backup of ``source`` into ``target``.

    A damaged backup never leaves data behind: into a database the dumper creates it may stream
    (and drops that database on any failure); anywhere else every stream is verified first."""
    t0 = time.monotonic()
    with RepoLock(repo.storage, SHARED, f"restore {source.id}", wait=600):
        manifest = find_backup(repo, source.id, backup_id)
        spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dbfleet-restore-", dir=spool_dir) as tmp:
            dumper = dumper_for(source, Path(tmp), resolve_password=False)
            tick = _ticker(progress, _check_space(manifest, Path(tmp)))
            streams = {check_stream_name(s["name"]): s for s in manifest["streams"]}
            detail = dumper.stream_restore(lambda name, sink: read_stream(repo, streams[name], sink, progress=tick),
                                           manifest, Path(tmp), target, options)
            if detail is None:
                files = spool(repo, manifest, Path(tmp), progress)
                detail = dumper.restore(files, manifest, target, options)
    return {"backup_id": manifest["backup_id"], "database_id": source.id, "target": target.db.id,
            "bytes": sum(s["size"] for s in manifest["streams"]),
            "duration_seconds": round(time.monotonic() - t0, 3), **detail}
