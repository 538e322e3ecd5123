"""The dumper contract: one module per database kind turns a server into streams and back."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engines.backup.pipeline import StreamRecord
from engines.config import DatabaseConfig
from engines.errors import RestoreRefused

# write(stream name, format, reader with readinto/read) -> what was stored
Write = Callable[[str, str, Any], StreamRecord]
# fetch(stream name, sink): write the stream's verified plaintext to sink; raises IntegrityError mid-way
Fetch = Callable[[str, Any], int]


@dataclass
class DumpInfo:
    """What a dumper learnt while dumping; goes into the manifest."""

    tool: str
    tool_version: str
    server_version: str
    row_counts: dict[str, int] = field(default_factory=dict)
    row_counts_exact: bool = False  # True when counted in the same snapshot as the dump
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreOptions:
    """How to restore: where to, what subset, how hard."""

    target_dbname: str | None = None  # another database name on the target server
    target_path: str | None = None  # sqlite: another file
    tables: list[str] = field(default_factory=list)  # PostgreSQL: restore only these tables
    clean: bool = False  # drop existing objects first instead of refusing a non-empty target
    jobs: int = 2
    no_owner: bool = False
    globals: bool = False  # PostgreSQL: also replay roles from pg_dumpall --globals-only

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("tables"), str):
            known["tables"] = [t for t in known["tables"].split(",") if t]
        return cls(**known)


@dataclass
class Target:
    """A database a restore writes to: its registry entry and its resolved password."""

    db: DatabaseConfig
    password: str | None


class Dumper(abc.ABC):
    """Dump one database into named streams and restore them.

    Contract:
    - ``backup(write)`` runs the kind's real tool (or driver) and hands each stream to
      ``write(name, format, reader)`` in order; the stream is never staged whole on disk or in
      memory. A tool that exits non-zero raises ToolFailed; nothing is written to the target.
    - ``restore(files, ...)`` gets every stream already reassembled and verified in local files,
      so a corrupted backup is refused before the target is touched. It refuses a non-empty
      target unless ``clean``; a database it created is dropped again when the restore fails.
    - ``count_rows(target)`` counts what a restore produced (drills compare it with the manifest).
    - ``scratch(manifest)`` is a context manager giving a throw-away target for drills, removed on exit.
    - Passwords travel to tools in 0600 files or the environment, never on command lines.
    """

    kind: ClassVar[str]

    def __init__(self, db: DatabaseConfig, password: str | None, workdir: Path) -> None:
        self.db = db
        self.password = password
        self.workdir = workdir

    @staticmethod
    def target_dbname(target: Target, options: RestoreOptions) -> str:
        """The database name a restore writes to: ``target_dbname``, else the target's own."""
        dbname = options.target_dbname or target.db.dbname
        if not dbname:
            raise RestoreRefused(f"database {target.db.id!r} names no dbname; pass target_dbname")
        return check_dbname(dbname)

    def estimate_bytes(self) -> int | None:
        """A size estimate for progress percentages (None when unknown)."""
        return None

    @abc.abstractmethod
    def backup(self, write: Write) -> DumpInfo:
        """Dump every stream through ``write``."""

    @abc.abstractmethod
    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        """Load verified stream files into ``target``."""

    def stream_restore(self, fetch: Fetch, manifest: dict[str, Any], workdir: Path, target: Target,
                       options: RestoreOptions) -> dict[str, Any] | None:
        """Optional fast path: load while the streams arrive. Only allowed into a database this call
        creates (and drops again on any failure, a corrupted chunk included), so no partial data can
        remain. Return None to ask for the spool-first path (:meth:`restore`)."""
        return None

    @abc.abstractmethod
    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        """Rows (or keys/documents) per table in a restored target."""

    def scratch(self, manifest: dict[str, Any]) -> AbstractContextManager[tuple[Target, RestoreOptions]]:
        """A scratch target for a restore drill, dropped on exit (kinds that drill another way override
        :meth:`drill_counts` instead)."""
        raise NotImplementedError(f"{self.kind} has no scratch target")

    def drill_counts(self, files: dict[str, Path], manifest: dict[str, Any]) -> dict[str, int]:
        """Restore verified stream files into a scratch target and count what arrived."""
        with self.scratch(manifest) as (target, options):
            self.restore(files, manifest, target, options)
            return self.count_rows(target, options)


def check_dbname(name: str, what: str = "target_dbname") -> str:
    """A database name, never a connection string or a command-line option (``host=...``, ``--execute=``)."""
    problems = []
    if not name or len(name.encode()) > 63:
        problems.append("1 to 63 bytes")
    if name.startswith("-"):
        problems.append("no leading '-'")
    if any(c in name for c in "=/\\") or "://" in name:
        problems.append("no '=', '/' or '\\'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.append("no control characters")
    if problems:
        raise RestoreRefused(f"refusing {what} {name!r}: a database name must have {', '.join(problems)}")
    return name


def chunked(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
