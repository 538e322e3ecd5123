"""Physical base backups: ``pg_basebackup -Ft -D - -X fetch`` streamed into the repository.

The tar stream goes through the same chunker/dedup/zstd/AES-GCM pipeline as dumps (stream
``base``); the server's ``backup_manifest`` (injected at the end of the tar by pg_basebackup) is
also kept as its own small stream for ``pg_verifybackup`` and PostgreSQL 17+ incremental backups.
Connection parameters travel in the environment, the password in a 0600 passfile in a 0700 dir.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from engines.backup import tools
from engines.backup.dumpers.base import DumpInfo
from engines.backup.dumpers.postgres import LIBPQ_ENV, conn_params, passfile_text
from engines.backup.locks import SHARED, RepoLock
from engines.backup.physical import is_physical
from engines.backup.physical.tar import TarTap
from engines.backup.pipeline import ChunkWriter, StreamRecord, read_stream
from engines.backup.repository import Repository, new_backup_id, utcnow
from engines.backup.wal import names
from engines.config import DatabaseConfig
from engines.connectors.postgres import PostgresConnector
from engines.errors import BackupNotFound, IntegrityError

log = logging.getLogger("dbfleet.backup")
_LABEL = re.compile(r"^START WAL LOCATION: (\S+) \(file ([0-9A-F]{24})\)", re.M)
_START_TIME = re.compile(r"^START TIME: (.+)$", re.M)


def pg_env(db: DatabaseConfig, password: str | None, directory: Path) -> tuple[dict[str, str], list[str]]:
    """libpq environment (connection parameters as PG* variables, the password in a passfile under
    ``directory``) and extra arguments (none: no DSN ever reaches a command line)."""
    params = conn_params(db)  # the DSN parsed by libpq itself, then the explicit fields
    env = {"PGAPPNAME": "dbfleet", "PGCONNECT_TIMEOUT": str(max(2, int(db.connect_timeout)))}
    env |= {LIBPQ_ENV[key]: value for key, value in params.items()}
    if password:  # lines for this host, port and user only (a replication connection's database is "replication")
        text = passfile_text(params, password, ["replication", params["dbname"]])
        env["PGPASSFILE"] = str(tools.secret_file(directory, "pgpass", text))
    elif db.passfile:
        env["PGPASSFILE"] = db.passfile
    return env, []


def server_facts(db: DatabaseConfig, password: str | None) -> dict[str, Any]:
    """Major version, WAL segment size, system identifier and archiving settings of ``db``'s server."""
    with PostgresConnector(db, password) as c:
        row = c.conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
            " current_setting('wal_segment_size'), (SELECT system_identifier FROM pg_control_system()),"
            " current_setting('archive_mode'), current_setting('wal_level'),"
            " pg_database_size(current_database())").fetchone()
    version, num, segsize, sysid, archive_mode, wal_level, size = row
    return {"server_version": version, "server_major": int(num) // 10000,
            "wal_segment_size": _bytes(segsize), "system_identifier": str(sysid),
            "archive_mode": archive_mode, "wal_level": wal_level, "size_bytes": int(size)}


def _bytes(setting: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([kMG]?B)?", setting.strip())
    if not match:
        return names.DEFAULT_SEGMENT_SIZE
    unit = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}.get(match.group(2) or "", 1)
    return int(match.group(1)) * unit


def physical_backups(repo: Repository, database_id: str) -> list[dict[str, Any]]:
    """Manifests of ``database_id``'s base backups, oldest first."""
    manifests = [repo.load_manifest(d, b) for d, b in repo.backup_ids(database_id)]
    return [m for m in manifests if is_physical(m)]


def _previous_manifest(repo: Repository, database_id: str, directory: Path) -> tuple[Path, str]:
    """Write the newest base backup's backup_manifest to ``directory`` (for --incremental)."""
    found = physical_backups(repo, database_id)
    if not found:
        raise BackupNotFound(f"an incremental base backup of {database_id!r} needs a previous physical backup; "
                             "take a full one first (dbfleet backups run --physical)")
    prev = found[-1]
    stream = next(s for s in prev["streams"] if s["name"] == "backup_manifest")
    path = directory / "previous_backup_manifest"
    with open(path, "wb") as fh:
        read_stream(repo, stream, fh)
    return path, prev["backup_id"]


def _basebackup_args(tool: Path, extra: list[str], incremental: Path | None) -> list[str]:
    args = [str(tool), "--format=tar", "--pgdata=-", "--wal-method=fetch", "--checkpoint=fast",
            "--verbose", "--no-password", "--manifest-checksums=CRC32C", *extra]
    if incremental is not None:
        args.append(f"--incremental={incremental}")
    return args


def _wal_facts(label: bytes, manifest: bytes, segment_size: int) -> dict[str, Any]:
    """Start/end LSN, timeline and the first WAL segment, from backup_label and backup_manifest."""
    text = label.decode(errors="replace")
    match = _LABEL.search(text)
    try:
        ranges = json.loads(manifest)["WAL-Ranges"]
    except (ValueError, KeyError):
        raise IntegrityError("pg_basebackup's backup_manifest is missing or not JSON") from None
    if not match or not ranges:
        raise IntegrityError("pg_basebackup's stream had no backup_label / WAL range")
    end = ranges[-1]
    end_lsn = names.parse_lsn(end["End-LSN"])
    started = _START_TIME.search(text)
    return {"start_lsn": match.group(1), "start_segment": match.group(2), "timeline": int(end["Timeline"]),
            "end_lsn": end["End-LSN"], "end_segment": names.segment_of(int(end["Timeline"]), end_lsn, segment_size),
            "label_start_time": started.group(1).strip() if started else None}


def run_physical_backup(repo: Repository, db: DatabaseConfig, *, level: int | None = 3,
                        progress: Any = None, incremental: bool = False, lock_wait: float = 600.0,
                        threads: int | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Stream a base backup of ``db`` into ``repo``; visible once its manifest is written, last.

    The passfile and the previous manifest live in a 0700 directory under ``workdir`` (the task's private
    directory, swept if the worker dies), removed at the end."""
    from engines.backup.engine import _stats, summarize

    password = db.password()
    facts = server_facts(db, password)
    tool, version = tools.pg_tool("pg_basebackup", facts["server_major"])
    with RepoLock(repo.storage, SHARED, f"physical backup {db.id}", wait=lock_wait), \
            tools.private_dir(workdir, prefix="dbfleet-basebackup-") as tmp:
        known = set(repo.chunk_sizes())
        started, t0 = utcnow(), time.monotonic()
        backup_id = new_backup_id(started)
        parent = _previous_manifest(repo, db.id, tmp) if incremental else None
        env, extra = pg_env(db, password, tmp)
        threads = threads or (6 if repo.storage.scheme == "s3" else 2)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress:
                progress(done[0], facts["size_bytes"])

        writer = ChunkWriter(repo, known, level=level, threads=threads, inflight=2 * threads + 4, progress=tick)
        streams: list[StreamRecord] = []
        try:
            with tools.ToolStream(_basebackup_args(tool, extra, parent[0] if parent else None),
                                  env=env, what="pg_basebackup") as proc:
                tap = TarTap(proc.stdout, {"backup_label", "backup_manifest"})
                streams.append(writer.write("base", "pg_basebackup-tar", tap))
                proc.finish()
            manifest_bytes = bytes(tap.members.get("backup_manifest", b""))
            streams.append(writer.write("backup_manifest", "postgresql-backup-manifest", io.BytesIO(manifest_bytes)))
        finally:
            writer.close()
        wal = _wal_facts(bytes(tap.members.get("backup_label", b"")), manifest_bytes, facts["wal_segment_size"])
        info = DumpInfo(tool="pg_basebackup", tool_version=version, server_version=facts["server_version"],
                        extra={**{k: facts[k] for k in ("server_major", "wal_segment_size", "system_identifier",
                                                        "archive_mode", "wal_level")},
                               **wal, "files": tap.files, "incremental_of": parent[1] if parent else None})
        if facts["archive_mode"] == "off":
            info.warnings.append("archive_mode is off: this base backup restores to its end point only; "
                                 "set archive_command = 'dbfleet wal push %p' for point-in-time recovery")
        manifest: dict[str, Any] = {
            "format": "dbfleet-manifest", "version": 1, "repository": repo.id,
            "backup_id": backup_id, "database_id": db.id, "kind": db.kind,
            "started_at": started.isoformat(), "finished_at": utcnow().isoformat(),
            "duration_seconds": round(time.monotonic() - t0, 3),
            "source": {k: v for k, v in db.public().items() if k in ("host", "port", "dbname", "user")},
            "dump": info.to_dict(), "streams": [s.to_dict() for s in streams], "stats": _stats(streams),
            "options": {"compression_level": level, "method": "physical",
                        "backup_type": "incremental" if parent else "full"},
        }
        repo.save_manifest(manifest)
    log.info("physical backup %s of %s: %d bytes, %d new", backup_id, db.id, manifest["stats"]["total_bytes"],
             manifest["stats"]["new_bytes"])
    return summarize(manifest)

