"""`dbfleet wal push|fetch|status`: PostgreSQL's archive_command and restore_command, and the archive's state.

push and fetch run inside PostgreSQL's archiver and startup processes: they load the config and
open the repository directly (no broker, no worker) and print one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from workers.render import console, err_console, human_bytes, key_value_table, rows_table

# PostgreSQL aborts recovery when restore_command exits above 125; 1 means "not archived".
EXIT_MISSING = 1
EXIT_DAMAGED = 126

_db = click.option("--db", "database_id", envvar="DBFLEET_DB", required=True,
                   help="registry id of the database (or DBFLEET_DB)")
_storage = click.option("--storage", default=None, help="storage target (default: backup.storage)")


def _config() -> Any:
    """The config, loaded without workers.runtime: push and fetch run once per WAL file, and the history
    store's imports (SQLAlchemy) would double their start-up time."""
    import os

    from engines.config import load_config

    return load_config(os.environ.get("DBFLEET_CONFIG") or None)


def _archive(database_id: str, storage: str | None, *, create: bool = False) -> Any:
    from engines.backup.engine import open_repository
    from engines.backup.wal.archive import WalArchive

    cfg = _config()
    db = cfg.database(database_id)
    if db.kind != "postgresql":
        raise click.UsageError(f"{database_id} is a {db.kind} database; WAL archiving is for PostgreSQL")
    return WalArchive(open_repository(cfg, storage, create=create), db.id)


@click.group("wal")
def wal() -> None:
    """PostgreSQL WAL archive: archive_command, restore_command, status."""


@wal.command("push")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_db
@_storage
def wal_push(path: Path, database_id: str, storage: str | None) -> None:
    """Archive one WAL file (archive_command = 'dbfleet wal push %p --db ID')."""
    section = _config().database_scripts.backup
    level = section.compression_level if section.compression else None
    result = _archive(database_id, storage, create=True).push(path, level=level)
    err_console.print(f"wal push {result.name}: {result.status} ({human_bytes(result.size)}, "
                      f"stored {human_bytes(result.stored_bytes)})", highlight=False)


@wal.command("fetch")
@click.argument("name")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@_db
@_storage
def wal_fetch(name: str, dest: Path, database_id: str, storage: str | None) -> None:
    """Restore one archived WAL file (restore_command = 'dbfleet wal fetch %f %p --db ID')."""
    from engines.errors import DbfleetError, IntegrityError

    try:
        found = _archive(database_id, storage).fetch(name, dest)
    except ValueError as exc:  # not a WAL file name
        err_console.print(f"wal fetch: {exc}")
        sys.exit(EXIT_MISSING)
    except DbfleetError as exc:  # damaged, unreadable storage, wrong key: never "end of archive"
        what = "damaged in the repository" if isinstance(exc, IntegrityError) else "cannot be read"
        err_console.print(f"[red]error:[/red] wal fetch {name}: {what}: {exc}; "
                          "recovery stops here rather than ending early")
        sys.exit(EXIT_DAMAGED)
    if not found:
        err_console.print(f"wal fetch {name}: not archived", highlight=False)
        sys.exit(EXIT_MISSING)


@wal.command("status")
@_db
@_storage
def wal_status(database_id: str, storage: str | None) -> None:
    """Archived WAL, its newest segment and age, and continuity from every base backup."""
    from engines.backup.wal.status import archive_status

    archive = _archive(database_id, storage)
    report = archive_status(archive)
    console.print(key_value_table(f"WAL archive of {database_id}", [
        ("files archived", report["files"]), ("newest segment", report["newest_segment"] or "none"),
        ("archived at", report["newest_at"] or "-"),
        ("age", f"{report['age_seconds']:.0f} s" if report["age_seconds"] is not None else "-")]))
    if report["base_backups"]:
        console.print(rows_table("continuity from each base backup",
                                 ["backup", "from", "timelines", "unbroken to", "missing"],
                                 [[b["backup_id"], b["start"], " → ".join(str(t["timeline"]) for t in b["timelines"]),
                                   b["last_contiguous"] or "-",
                                   ", ".join(b["missing"][:3]) + (" …" if b["missing_count"] > 3 else "")
                                   or "none"] for b in report["base_backups"]]))
    if not report["ok"]:
        sys.exit(1)


@wal.command("stream")
@click.argument("database_id")
@_storage
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="pg_receivewal's directory (default: <state dir>/wal-stream/<id>; kept between runs)")
def wal_stream(database_id: str, storage: str | None, spool: Path | None) -> None:
    """Stream WAL with pg_receivewal and a replication slot into the repository, until stopped (SIGTERM).

    For servers where archive_command cannot be set. Run it under a service manager (systemd, see
    docs/pitr.md), one process per database, like Barman's receive-wal."""
    import signal

    from engines.backup import tools
    from engines.backup.wal.stream import WalStream

    cfg = _config()
    archive = _archive(database_id, storage, create=True)
    section = cfg.database_scripts.backup
    spool = spool or cfg.fleet.state_path() / "wal-stream" / archive.database_id

    def pushed(result: Any) -> None:
        err_console.print(f"wal stream {result.name}: {result.status} ({human_bytes(result.size)}, "
                          f"stored {human_bytes(result.stored_bytes)})", highlight=False)

    with tools.private_dir(prefix="dbfleet-walstream-") as secrets:
        stream = WalStream(archive, cfg.database(database_id), spool, secrets_dir=secrets, on_push=pushed,
                           on_event=lambda text: err_console.print(f"[yellow]wal stream {database_id}:[/yellow] {text}"),
                           level=section.compression_level if section.compression else None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stream.stop.set())
        err_console.print(f"wal stream {database_id}: slot {stream.slot}, spool {spool}; stop with SIGTERM or Ctrl-C",
                          highlight=False)
        stream.run()
    err_console.print(f"wal stream {database_id}: stopped after {len(stream.pushed)} files "
                      f"({stream.restarts} pg_receivewal restarts)", highlight=False)
