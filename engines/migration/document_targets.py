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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engines.connectors import open_connector
from engines.errors import ConfigError
from engines.migration.base import Checkpoints, Source, Target
from engines.migration.checksum import MOD
from engines.migration.model import Batch, Embed, MigrationPlan, MigrationType, Table
from engines.migration.types import converter

if TYPE_CHECKING:
    from engines.config import DatabaseConfig

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


class DocumentTarget(Target):
    """A target without multi-statement transactions: idempotent writes by id, checkpoint after (a rerun
    rewrites the same ids). Validation compares document counts and id checksums per table."""

    kind = "documents"
    supports_incremental = True  # upserts by document id; soft deletes remove documents (``soft_delete``)

    def __init__(self, client: Any, dbname: str | None = None) -> None:
        self.client = client
        self.dbname = dbname

    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig, lock_timeout: float = 60.0) -> Iterator[DocumentTarget]:
        """The target over the database's connector client."""
        with open_connector(db) as t:
            yield cls(t.conn, db.dbname)

    def write_batch(self, plan: MigrationPlan, table: Table, batch: Batch, source: Source) -> dict[str, Any]:
        """Idempotent writes by document id, then the checkpoint (embedded children from the same snapshot)."""
        done = self.done(plan, batch.id)
        if done is not None:
            return {"batch": batch.id, "table": table.source, "skipped": True, "rows": int(done.get("rows", 0))}
        convert = converter([c.cast for c in table.columns])
        embedded: Embedded = {}
        with source.snapshot():  # parents and children from one snapshot
            rows = [convert(r) for r in source.batch_rows(plan, table, batch)]
            for e in table.embeds:
                embedded[e.field] = _children(source, e, batch)
        deleted: list[str] = []
        if plan.soft_delete in {c.name for c in table.columns}:  # incremental: flagged rows leave the target
            at = [c.name for c in table.columns].index(plan.soft_delete)
            deleted = [doc_id(table, r) for r in rows if r[at]]
            rows = [r for r in rows if not r[at]]
            if deleted:
                self.delete(plan, table, deleted)
        n = self.write(plan, table, batch.id, rows, embedded)
        return {"batch": batch.id, "table": table.source, "rows": n, "rejects": 0, "skipped": False,
                "deleted": len(deleted),
                "embedded": {f: sum(len(v) for v in by_key.values()) for f, by_key in embedded.items()}}

    def delete(self, plan: MigrationPlan, table: Table, ids: list[str]) -> None:
        """Remove the documents ``ids`` (rows soft-deleted at the source); missing ones are no error."""
        raise NotImplementedError(f"{self.kind} targets do not delete documents")

    def plan_notes(self, plan: MigrationPlan) -> list[str]:
        """How deletes travel into documents."""
        notes = super().plan_notes(plan)
        if plan.type == MigrationType.INCREMENTAL.value and plan.soft_delete:
            notes.append(f"soft deletes: documents of rows with {plan.soft_delete} set are deleted; rows deleted"
                         " outright at the source are not seen")
        return notes

    def finalize(self, plan: MigrationPlan, db: DatabaseConfig, cps: Checkpoints) -> list[str]:
        """Nothing to build after the load; incremental runs record each table's watermark."""
        if plan.type == MigrationType.INCREMENTAL.value:
            for t in plan.tables:
                if plan.until.get(t.source) is not None:
                    self.put_watermark(plan.base_id or plan.id, t.source, str(plan.until[t.source]))
        return []

    def put_watermark(self, migration_id: str, table: str, value: str) -> None:
        raise NotImplementedError(f"{self.kind} targets take no incremental runs")

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        raise NotImplementedError(f"{self.kind} targets take no incremental runs")

    def validate(self, plan: MigrationPlan, db: DatabaseConfig, source: Source, cps: Checkpoints,
                 report: dict[str, Any]) -> dict[str, Any]:
        """Per table: the documents' count and id checksum against what the batches wrote (and, where
        children are embedded, ``embedded_report``); incremental runs: against the source's rows now (those
        not soft-deleted), since documents are upserted run after run."""
        for table in plan.tables:
            batches = [b.id for b in plan.batches if b.table == table.source]
            want = (sum(cps.get(b, {}).get("rows", 0) for b in batches),
                    sum(cps.get(b, {}).get("checksum", 0) for b in batches) % 2 ** 64)
            if plan.type == MigrationType.INCREMENTAL.value:
                want = _source_ids(plan, source, table)
            n, checksum = self.measure(plan, table)
            ok = (n, checksum) == want
            entry: dict[str, Any] = {
                "table": table.source, "target": table.target_name, "batches": len(batches), "source_rows": want[0],
                "target_rows": n, "rejects": 0, "ok": ok,
                "mismatched_ranges": [] if ok else [{"batch": None, "from": None, "to": None,
                                                     "source_rows": want[0], "target_rows": n}]}
            if table.embeds:
                entry["embedded"] = [self.embedded_report(plan, source, table, e, [cps.get(b, {}) for b in batches])
                                     for e in table.embeds]
                entry["ok"] = ok = ok and all(e["ok"] for e in entry["embedded"])
            report["tables"].append(entry)
            report["ok"] = report["ok"] and ok
        report["rejects"] = []
        return report

    def embedded_report(self, plan: MigrationPlan, source: Source, table: Table, embed: Embed,
                        cps: list[dict[str, Any]]) -> dict[str, Any]:
        """Validation of one embedded child table (targets that embed override it)."""
        raise NotImplementedError(f"{self.kind} targets do not embed child tables")

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



def _source_ids(plan: MigrationPlan, source: Source, table: Table) -> tuple[int, int]:
    """(rows, id checksum) of the source's rows that should be documents (not soft-deleted)."""
    names = [c.name for c in table.columns]
    at = names.index(plan.soft_delete) if plan.soft_delete in names else None
    with source.snapshot():
        ids = [doc_id(table, r) for r in source.rows(table, Batch(-1, table.source, None, None, "all"))
               if at is None or not r[at]]
    return len(ids), id_checksum(ids)


def _children(source: Any, embed: Embed, batch: Batch) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The batch's child rows as sub-documents (without the foreign key columns), by parent key."""
    convert = converter([c.cast for c in embed.columns])
    names = [c.name for c in embed.columns]
    fk_at = [names.index(k) for k in embed.fk]
    keep = [i for i, name in enumerate(names) if name not in embed.fk]
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for raw in source.children(embed, batch):
        row = convert(raw)
        out.setdefault(tuple(row[i] for i in fk_at), []).append({names[i]: row[i] for i in keep})
    return out


# ------------------------------------------------------------------ MongoDB
class MongoTarget(DocumentTarget):
    """MongoDB: a collection per table, documents by _id; child tables can be embedded."""

    kind = "mongodb"
    supports_embeds = True

    def embedded_report(self, plan: MigrationPlan, source: Source, table: Table, embed: Embed,
                        cps: list[dict[str, Any]]) -> dict[str, Any]:
        """Sub-documents in each document against what the batches embedded, and the child rows no document
        can hold (a NULL foreign key, or a missing parent row)."""
        written = [cp.get("embedded", {}).get(embed.field, (0, 0)) for cp in cps]
        want = (sum(w[0] for w in written), sum(w[1] for w in written) % 2 ** 64)
        n, checksum = self.measure_embedded(plan, table, embed.field)
        return {"table": embed.table, "field": embed.field, "source_rows": want[0], "target_rows": n,
                "not_embedded": source.orphans(table, embed), "ok": (n, checksum) == want}  # type: ignore[attr-defined]

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

    def db(self, plan: MigrationPlan | None = None) -> Any:
        return self.client[(plan.target.get("dbname") if plan else self.dbname) or "dbfleet"]

    def delete(self, plan: MigrationPlan, table: Table, ids: list[str]) -> None:
        from pymongo import DeleteOne

        self.db(plan)[table.target_name].bulk_write([DeleteOne({"_id": i}) for i in ids], ordered=False)

    def put_watermark(self, migration_id: str, table: str, value: str) -> None:
        key = f"wm:{migration_id}:{table}"
        self.db()[CONTROL].replace_one({"_id": key}, {"_id": key, "watermark_of": migration_id, "value": value},
                                       upsert=True)

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        found = self.db()[CONTROL].find_one({"_id": f"wm:{migration_id}:{table}"})
        return None if found is None else str(found["value"])

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

    def delete(self, plan: MigrationPlan, table: Table, ids: list[str]) -> None:
        index = self.index(plan, table)
        result = self.client.bulk(operations=[{"delete": {"_index": index, "_id": i}} for i in ids], refresh=False)
        bad = [it["delete"] for it in result.get("items", [])
               if "error" in it.get("delete", {}) and it["delete"].get("status") != 404][:3]
        if bad:
            raise RuntimeError(f"could not remove documents of {index}: {bad}")

    def put_watermark(self, migration_id: str, table: str, value: str) -> None:
        if not self.client.indices.exists(index=CONTROL):
            self.client.indices.create(index=CONTROL)
        self.client.index(index=CONTROL, id=f"wm:{migration_id}:{table}",
                          document={"watermark_of": migration_id, "table": table, "value": value}, refresh=True)

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        if not self.client.indices.exists(index=CONTROL) or \
                not self.client.exists(index=CONTROL, id=f"wm:{migration_id}:{table}"):
            return None
        return str(self.client.get(index=CONTROL, id=f"wm:{migration_id}:{table}")["_source"]["value"])

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
