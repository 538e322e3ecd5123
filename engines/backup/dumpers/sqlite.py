"""SQLite: the online backup API into a private copy, streamed; restored with the backup API too."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from engines.backup.dumpers.base import Dumper, DumpInfo, RestoreOptions, Target, Write
from engines.errors import ConnectionFailed, IntegrityError, RestoreRefused

TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"


def quote_ident(name: str) -> str:
    """An SQLite identifier in double quotes (sqlite3 has no identifier API; quotes are doubled)."""
    return '"' + name.replace('"', '""') + '"'


def count_tables(conn: sqlite3.Connection) -> dict[str, int]:
    """Exact rows per table."""
    tables = [row[0] for row in conn.execute(TABLES_SQL)]
    query = "SELECT count(*) FROM {}"  # noqa: S608 - the identifier is quoted by quote_ident
    return {t: int(conn.execute(query.format(quote_ident(t))).fetchone()[0]) for t in tables}


class SQLiteDumper(Dumper):
    kind = "sqlite"

    def _source(self) -> Path:
        path = Path(self.db.path or "").expanduser()
        if not path.is_file():
            raise ConnectionFailed(f"sqlite database {self.db.id!r}: file {path} does not exist")
        return path

    def estimate_bytes(self) -> int | None:
        return self._source().stat().st_size

    def backup(self, write: Write) -> DumpInfo:
        source = self._source()
        with tempfile.TemporaryDirectory(prefix="dbfleet-sqlite-", dir=self.workdir) as tmp:
            copy = Path(tmp) / "copy.db"
            with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)) as src, \
                    closing(sqlite3.connect(copy)) as dst:
                src.backup(dst, pages=4096)
                counts = count_tables(dst)
                version = src.execute("SELECT sqlite_version()").fetchone()[0]
            with open(copy, "rb") as fh:
                write("db", "sqlite3", fh)
        return DumpInfo(tool="sqlite3 backup API", tool_version=sqlite3.sqlite_version, server_version=version,
                        row_counts=counts, row_counts_exact=True)

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        dest = Path(options.target_path or target.db.path or "").expanduser()
        with closing(sqlite3.connect(files["db"])) as src:
            check = src.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise IntegrityError(f"restored SQLite file fails integrity_check: {check}")
            if dest.exists() and dest.stat().st_size and not options.clean:
                with closing(sqlite3.connect(dest)) as existing:
                    if existing.execute(TABLES_SQL).fetchall():
                        raise RestoreRefused(f"{dest} is not empty; restore to another target_path or "
                                             "pass clean=true")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(dest, timeout=60)) as dst:
                src.backup(dst)  # one transaction on the target: readers see old or new
        return {"target": target.db.id, "path": str(dest)}

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        path = Path(options.target_path or target.db.path or "").expanduser()
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return count_tables(conn)

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        with tempfile.TemporaryDirectory(prefix="dbfleet-drill-", dir=self.workdir) as tmp:
            yield Target(self.db, None), RestoreOptions(target_path=str(Path(tmp) / "drill.db"))
