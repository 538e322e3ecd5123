"""ClickHouse as a migration target, over its HTTP interface: a ReplacingMergeTree table per source table
(re-inserted keys collapse), rows as JSONEachRow, checkpoints in a table of its own."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from engines.migration.document_targets import CONTROL, DocumentTarget, Embedded, _plain, _require_keys, id_checksum
from engines.migration.model import MigrationPlan, Table

if TYPE_CHECKING:
    from engines.config import DatabaseConfig


CH_TYPES = {"smallint": "Int16", "integer": "Int32", "bigint": "Int64", "boolean": "UInt8", "real": "Float32",
            "double precision": "Float64", "date": "Date", "timestamp": "DateTime64(6)",
            "timestamptz": "DateTime64(6, 'UTC')", "timestamp with time zone": "DateTime64(6, 'UTC')",
            "timestamp without time zone": "DateTime64(6)", "uuid": "UUID"}


def ch_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def ch_type(target_type: str, nullable: bool) -> str:
    base = target_type.split("(")[0].strip()
    # numeric(p[,s]) -> Decimal(p, s) from the digits only: a type's text comes from the source
    precision = re.fullmatch(r"numeric\((\d+)(?:,\s*(\d+))?\)", target_type.strip())
    if precision:
        kind = f"Decimal({','.join(filter(None, precision.groups()))})"
    else:
        kind = CH_TYPES.get(target_type, CH_TYPES.get(base, "String"))
    return f"Nullable({kind})" if nullable else kind


def clickhouse_ddl(table: Table, database: str) -> str:
    """CREATE TABLE ... ENGINE = ReplacingMergeTree ORDER BY (key): re-inserted keys collapse."""
    cols = ", ".join(f"{ch_ident(c.name)} {ch_type(c.target_type, c.nullable and c.name not in table.key)}"
                     for c in table.columns)
    order = ", ".join(ch_ident(k) for k in table.key)
    return (f"CREATE TABLE IF NOT EXISTS {ch_ident(database)}.{ch_ident(table.target_name)} ({cols})"
            f" ENGINE = ReplacingMergeTree ORDER BY ({order})")


class ClickHouseTarget(DocumentTarget):
    """ClickHouse over HTTP (no connector): idempotent by ReplacingMergeTree keys."""

    kind = "clickhouse"

    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig, lock_timeout: float = 60.0) -> Iterator[ClickHouseTarget]:
        """The target at the database's URL (dsn) or host:port."""
        yield cls(db.dsn or f"http://{db.host}:{db.port}", db.user, db.password(), db.query_timeout * 3)

    def __init__(self, url: str, user: str | None = None, password: str | None = None, timeout: float = 30) -> None:
        super().__init__(None)
        self.url, self.timeout = url.rstrip("/"), timeout
        self.headers = {"X-ClickHouse-User": user or "default"}
        if password:
            self.headers["X-ClickHouse-Key"] = password

    def value(self, v: Any) -> Any:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, dt.datetime):
            return v.strftime("%Y-%m-%d %H:%M:%S.%f")
        return _plain(v, self.kind)

    def query(self, sql_text: str, body: bytes | None = None) -> str:
        url = f"{self.url}/?{urllib.parse.urlencode({'query': sql_text})}" if body is not None else self.url
        data = body if body is not None else sql_text.encode()
        req = urllib.request.Request(url, data=data, headers=self.headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - URL from the config
            text: str = resp.read().decode()
            return text

    def database(self, plan: MigrationPlan) -> str:
        return str(plan.target.get("dbname") or "default")

    def prepare(self, plan: MigrationPlan) -> list[str]:
        _require_keys(plan)
        db, created = self.database(plan), list(plan.created)
        self.query(f"CREATE TABLE IF NOT EXISTS {ch_ident(db)}.{CONTROL} (migration_id String, batch_id Int64,"
                   " table_name String, rows Int64, checksum String) ENGINE = ReplacingMergeTree"
                   " ORDER BY (migration_id, batch_id)")
        for t in plan.tables:
            exists = self.query(f"EXISTS TABLE {ch_ident(db)}.{ch_ident(t.target_name)}").strip() == "1"
            if not exists:
                self.query(clickhouse_ddl(t, db))
                created.append(f"chtable:{t.target_name}")
        return created

    def done(self, plan: MigrationPlan, batch_id: int) -> dict[str, Any] | None:
        out = self.query(f"SELECT rows FROM {ch_ident(self.database(plan))}.{CONTROL} FINAL WHERE migration_id = "  # noqa: S608 - quoted names, escaped id
                         f"'{_ch_str(plan.id)}' AND batch_id = {int(batch_id)} FORMAT JSONEachRow")
        return json.loads(out.splitlines()[0]) if out.strip() else None

    def write(self, plan: MigrationPlan, table: Table, batch_id: int, rows: list[tuple[Any, ...]],
              embedded: Embedded | None = None) -> int:
        docs = self.documents(table, rows)
        db = self.database(plan)
        if docs:
            body = "\n".join(json.dumps(d, default=str) for _, d in docs).encode()
            self.query(f"INSERT INTO {ch_ident(db)}.{ch_ident(table.target_name)} FORMAT JSONEachRow", body)
        line = json.dumps({"migration_id": plan.id, "batch_id": batch_id, "table_name": table.source,
                           "rows": len(docs), "checksum": str(id_checksum([i for i, _ in docs]))})
        self.query(f"INSERT INTO {ch_ident(db)}.{CONTROL} FORMAT JSONEachRow", line.encode())
        return len(docs)

    def measure(self, plan: MigrationPlan, table: Table) -> tuple[int, int]:
        keys = ", ".join(f"toString({ch_ident(k)})" for k in table.key)
        out = self.query(f"SELECT arrayStringConcat([{keys}], '|') FROM {ch_ident(self.database(plan))}."  # noqa: S608 - quoted names
                         f"{ch_ident(table.target_name)} FINAL FORMAT TabSeparatedRaw")
        ids = [line for line in out.split("\n") if line]
        return len(ids), id_checksum(ids)

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        out = self.query(f"SELECT batch_id, rows, checksum FROM {ch_ident(self.database(plan))}.{CONTROL} FINAL"  # noqa: S608 - quoted names, escaped id
                         f" WHERE migration_id = '{_ch_str(plan.id)}' FORMAT JSONEachRow")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {int(r["batch_id"]): {"rows": int(r["rows"]), "checksum": int(r["checksum"])} for r in rows}

    def rollback(self, plan: MigrationPlan) -> list[str]:
        done = []
        for obj in reversed(plan.created):
            kind, _, name = obj.partition(":")
            if kind == "chtable":
                self.query(f"DROP TABLE IF EXISTS {ch_ident(self.database(plan))}.{ch_ident(name)}")
                done.append(obj)
        return done


def _ch_str(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
