"""PostgreSQL (or MySQL) rows into MongoDB, Elasticsearch and ClickHouse.

Writes are idempotent by document id (the row's primary key): MongoDB bulk upserts by ``_id``,
Elasticsearch bulk index by ``_id``, ClickHouse ReplacingMergeTree ordered by the key (read with FINAL).
A batch's checkpoint is written after its documents (these stores have no transaction spanning both);
a redelivered batch rewrites the same ids, so nothing is duplicated. Validation compares, per table,
the number of documents and an order-independent checksum of their ids with what the batches wrote.
Tables need a primary key (a document needs a stable id).
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import hashlib
import json
import re
import urllib.parse
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

from engines.errors import ConfigError
from engines.migration.checksum import MOD
from engines.migration.model import MigrationPlan, Table

CONTROL = "_dbfleet_checkpoints"


Embedded = dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]]


def doc_id(table: Table, row: tuple[Any, ...]) -> str:
    names = [c.name for c in table.columns]
    return "|".join(str(row[names.index(k)]) for k in table.key)


def id_checksum(ids: list[str]) -> int:
    return sum(int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in ids) % MOD


def embedded_checksum(entries: list[tuple[str, str, int]]) -> int:
    """Embedded arrays, order-independently: (parent document id, field, number of sub-documents)."""
    return id_checksum([f"{i}#{f}#{n}" for i, f, n in entries if n])


def _require_keys(plan: MigrationPlan) -> None:
    keyless = [t.source for t in plan.tables if not t.key]
    if keyless:
        raise ConfigError([("tables", f"{', '.join(keyless)}: no primary key; a document target needs one")])


def _plain(value: Any, kind: str) -> Any:
    """A JSON-able value (Elasticsearch, ClickHouse)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (uuid.UUID, dt.timedelta)):
        return str(value)
    if isinstance(value, list):
        return [_plain(v, kind) for v in value]
    return value


class DocumentTarget(abc.ABC):
    """A target without multi-statement transactions: idempotent writes by id, checkpoint after."""

    kind = "documents"

    def __init__(self, client: Any) -> None:
        self.client = client

    @abc.abstractmethod
    def prepare(self, plan: MigrationPlan) -> list[str]:
        """Create collections/indexes/tables; return the objects created (for rollback)."""

    @abc.abstractmethod
    def done(self, plan: MigrationPlan, batch_id: int) -> dict[str, Any] | None:
        """The batch's checkpoint, or None."""

    @abc.abstractmethod
    def write(self, plan: MigrationPlan, table: Table, batch_id: int, rows: list[tuple[Any, ...]],
              embedded: Embedded | None = None) -> int:
        """Upsert the rows by id, then record the checkpoint; return the documents written. ``embedded``
        (MongoDB): field -> parent key -> sub-documents to put in each parent's document."""

    @abc.abstractmethod
    def measure(self, plan: MigrationPlan, table: Table) -> tuple[int, int]:
        """(documents, id checksum) of a table's target."""

    @abc.abstractmethod
    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        """batch id -> rows, id checksum."""

    @abc.abstractmethod
    def rollback(self, plan: MigrationPlan) -> list[str]:
        """Drop what prepare created."""

    def documents(self, table: Table, rows: list[tuple[Any, ...]]) -> list[tuple[str, dict[str, Any]]]:
        names = [c.name for c in table.columns]
        return [(doc_id(table, r), {n: self.value(v) for n, v in zip(names, r, strict=True)}) for r in rows]

    def value(self, v: Any) -> Any:
        return _plain(v, self.kind)


# ------------------------------------------------------------------ MongoDB
class MongoTarget(DocumentTarget):
    kind = "mongodb"

    def value(self, v: Any) -> Any:
        from bson import Binary, Decimal128

        if isinstance(v, Decimal):
            return Decimal128(v)
        if isinstance(v, dt.datetime):
            return v
        if isinstance(v, dt.date):
            return dt.datetime(v.year, v.month, v.day)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return Binary(bytes(v))
        return _plain(v, self.kind)

    def db(self, plan: MigrationPlan) -> Any:
        return self.client[plan.target.get("dbname") or "dbfleet"]

    def prepare(self, plan: MigrationPlan) -> list[str]:
        _require_keys(plan)
        created, db = list(plan.created), self.db(plan)
        existing = set(db.list_collection_names())
        for t in plan.tables:
            if t.target_name not in existing and f"collection:{t.target_name}" not in created:
                db.create_collection(t.target_name)
                created.append(f"collection:{t.target_name}")
        return created

    def done(self, plan: MigrationPlan, batch_id: int) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self.db(plan)[CONTROL].find_one({"_id": f"{plan.id}:{batch_id}"})
        return doc

    def write(self, plan: MigrationPlan, table: Table, batch_id: int, rows: list[tuple[Any, ...]],
              embedded: Embedded | None = None) -> int:
        from pymongo import ReplaceOne

        docs = self.documents(table, rows)
        counts: dict[str, list[tuple[str, str, int]]] = {f: [] for f in embedded or {}}
        if embedded:
            names = [c.name for c in table.columns]
            at = [names.index(k) for k in table.key]
            keys = [tuple(r[i] for i in at) for r in rows]
            for (i, d), key in zip(docs, keys, strict=True):
                for field, by_key in embedded.items():
                    subs = by_key.get(key, [])
                    d[field] = [{k: self.value(v) for k, v in sub.items()} for sub in subs]
                    counts[field].append((i, field, len(subs)))
        if docs:
            self.db(plan)[table.target_name].bulk_write(
                [ReplaceOne({"_id": i}, {"_id": i, **d}, upsert=True) for i, d in docs], ordered=False)
        self.db(plan)[CONTROL].replace_one({"_id": f"{plan.id}:{batch_id}"}, {
            "_id": f"{plan.id}:{batch_id}", "migration_id": plan.id, "table": table.source, "rows": len(docs),
            "checksum": str(id_checksum([i for i, _ in docs])),
            "embedded": {f: {"rows": sum(n for _, _, n in c), "checksum": str(embedded_checksum(c))}
                         for f, c in counts.items()}}, upsert=True)
        return len(docs)

    def measure(self, plan: MigrationPlan, table: Table) -> tuple[int, int]:
        ids = [str(d["_id"]) for d in self.db(plan)[table.target_name].find({}, {"_id": 1})]
        return len(ids), id_checksum(ids)

    def measure_embedded(self, plan: MigrationPlan, table: Table, field: str) -> tuple[int, int]:
        """(sub-documents in ``field`` over the collection, ``embedded_checksum``), counted by the server."""
        sizes = self.db(plan)[table.target_name].aggregate(
            [{"$project": {"n": {"$size": {"$ifNull": ["$" + field, []]}}}}])
        entries = [(str(d["_id"]), field, int(d["n"])) for d in sizes]
        return sum(n for _, _, n in entries), embedded_checksum(entries)

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for d in self.db(plan)[CONTROL].find({"migration_id": plan.id}):
            out[int(str(d["_id"]).rsplit(":", 1)[1])] = {
                "rows": int(d["rows"]), "checksum": int(d["checksum"]),
                "embedded": {f: (int(e["rows"]), int(e["checksum"])) for f, e in d.get("embedded", {}).items()}}
        return out

    def rollback(self, plan: MigrationPlan) -> list[str]:
        db = self.db(plan)
        done = []
        for obj in reversed(plan.created):
            kind, _, name = obj.partition(":")
            if kind == "collection":
                db.drop_collection(name)
                done.append(obj)
        db[CONTROL].delete_many({"migration_id": plan.id})
        return done


# ------------------------------------------------------------------ Elasticsearch
ES_TYPES = {"smallint": "short", "integer": "integer", "bigint": "long", "boolean": "boolean", "real": "float",
            "double precision": "double", "date": "date", "timestamp": "date", "timestamptz": "date",
            "timestamp without time zone": "date", "timestamp with time zone": "date", "bytea": "binary",
            "jsonb": "object", "json": "object", "uuid": "keyword"}


def es_mapping(table: Table) -> dict[str, Any]:
    """An index mapping derived from the column types."""
    props: dict[str, Any] = {}
    for c in table.columns:
        base = c.target_type.removesuffix("[]").split("(")[0].strip()
        if base in ES_TYPES:
            props[c.name] = {"type": ES_TYPES[base]}
        elif base.startswith("numeric"):
            props[c.name] = {"type": "double"}
        elif base in ("character varying", "varchar", "character", "char"):
            props[c.name] = {"type": "keyword"}
        else:
            props[c.name] = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return {"properties": props}


class ElasticsearchTarget(DocumentTarget):
    kind = "elasticsearch"

    def index(self, plan: MigrationPlan, table: Table) -> str:
        return f"{plan.target.get('dbname') or ''}{table.target_name}".lower().replace(".", "_")

    def prepare(self, plan: MigrationPlan) -> list[str]:
        _require_keys(plan)
        created = list(plan.created)
        for t in plan.tables:
            name = self.index(plan, t)
            if not self.client.indices.exists(index=name):
                self.client.indices.create(index=name, mappings=es_mapping(t))
                created.append(f"index:{name}")
        if not self.client.indices.exists(index=CONTROL):
            self.client.indices.create(index=CONTROL)
        return created

    def done(self, plan: MigrationPlan, batch_id: int) -> dict[str, Any] | None:
        if not self.client.exists(index=CONTROL, id=f"{plan.id}:{batch_id}"):
            return None
        found: dict[str, Any] = self.client.get(index=CONTROL, id=f"{plan.id}:{batch_id}")["_source"]
        return found

    def write(self, plan: MigrationPlan, table: Table, batch_id: int, rows: list[tuple[Any, ...]],
              embedded: Embedded | None = None) -> int:
        docs = self.documents(table, rows)
        index = self.index(plan, table)
        if docs:
            ops: list[dict[str, Any]] = []
            for i, d in docs:
                ops += [{"index": {"_index": index, "_id": i}}, d]
            result = self.client.bulk(operations=ops, refresh=False)
            if result.get("errors"):
                bad = [it["index"]["error"] for it in result["items"] if "error" in it["index"]][:3]
                raise RuntimeError(f"bulk index into {index} rejected documents: {bad}")
        self.client.index(index=CONTROL, id=f"{plan.id}:{batch_id}", document={
            "migration_id": plan.id, "table": table.source, "rows": len(docs),
            "checksum": str(id_checksum([i for i, _ in docs]))})
        return len(docs)

    def measure(self, plan: MigrationPlan, table: Table) -> tuple[int, int]:
        from elasticsearch.helpers import scan

        index = self.index(plan, table)
        self.client.indices.refresh(index=index)
        ids = [h["_id"] for h in scan(self.client, index=index, query={"query": {"match_all": {}}}, _source=False)]
        return len(ids), id_checksum(ids)

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        from elasticsearch.helpers import scan

        self.client.indices.refresh(index=CONTROL)
        return {int(h["_id"].rsplit(":", 1)[1]): {"rows": int(h["_source"]["rows"]),
                                                  "checksum": int(h["_source"]["checksum"])}
                for h in scan(self.client, index=CONTROL, query={"query": {"term": {"migration_id.keyword": plan.id}}})}

    def rollback(self, plan: MigrationPlan) -> list[str]:
        done = []
        for obj in reversed(plan.created):
            kind, _, name = obj.partition(":")
            if kind == "index":
                self.client.indices.delete(index=name, ignore_unavailable=True)
                done.append(obj)
        self.client.delete_by_query(index=CONTROL, query={"term": {"migration_id.keyword": plan.id}},
                                    ignore_unavailable=True)
        return done


# ------------------------------------------------------------------ ClickHouse (HTTP interface)
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
    kind = "clickhouse"

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
