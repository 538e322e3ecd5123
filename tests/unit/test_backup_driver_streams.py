"""MongoDB and Elasticsearch export streams, round-tripped through a real repository.

MOCKS, NAMED AS SUCH: no MongoDB or Elasticsearch server can run on this machine, so
FakeMongoClient and FakeElasticsearch below are small in-memory stand-ins for the driver calls
the dumpers make. The real-server round trips live in tests/integration/test_backup_external.py
and run when DBFLEET_TEST_MONGODB_URL / DBFLEET_TEST_ELASTICSEARCH_URL are set.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128, ObjectId

from engines.backup.dumpers import jsonl
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.dumpers.elasticsearch import ElasticsearchDumper
from engines.backup.dumpers.mongodb import MongoDumper
from engines.backup.engine import spool
from engines.backup.pipeline import ChunkWriter
from engines.backup.repository import Repository
from engines.errors import IntegrityError, RestoreRefused
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db


class FakeCollection:
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []
        self.indexes: list[dict[str, Any]] = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
        self.opts: dict[str, Any] = {}

    def list_indexes(self) -> list[dict[str, Any]]:
        return self.indexes

    def options(self) -> dict[str, Any]:
        return self.opts

    def find(self, _query: dict[str, Any], batch_size: int = 0) -> list[dict[str, Any]]:
        return list(self.docs)

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        self.docs.extend(dict(d) for d in docs)

    def create_index(self, keys: list[tuple[str, Any]], **extra: Any) -> None:
        self.indexes.append({"v": 2, "key": dict(keys), **extra})

    def count_documents(self, _query: dict[str, Any]) -> int:
        return len(self.docs)


class FakeDatabase(dict):  # type: ignore[type-arg]
    def list_collection_names(self) -> list[str]:
        return list(self)

    def create_collection(self, name: str, **opts: Any) -> None:
        self[name] = FakeCollection()
        self[name].opts = opts

    def drop_collection(self, name: str) -> None:
        self.pop(name, None)


class FakeMongoClient(dict):  # type: ignore[type-arg]
    """MOCK: an in-memory MongoDB client (no MongoDB server can run here)."""

    def __missing__(self, name: str) -> FakeDatabase:
        self[name] = FakeDatabase()
        return self[name]

    def server_info(self) -> dict[str, str]:
        return {"version": "7.0.0-fake"}

    def drop_database(self, name: str) -> None:
        self.pop(name, None)

    def close(self) -> None:
        return None


def _backup(tmp_path: Path, dumper: Any) -> tuple[Repository, dict[str, Any]]:
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), "k")
    writer = ChunkWriter(repo, set(), level=3)
    streams = []
    info = dumper.backup(lambda name, fmt, reader: streams.append(writer.write(name, fmt, reader)) or streams[-1])
    writer.close()
    return repo, {"streams": [s.to_dict() for s in streams], "dump": info.to_dict()}


def test_mongodb_stream_round_trip_keeps_types_and_indexes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeMongoClient()
    users = client["music"]
    users.create_collection("users", validator={"$jsonSchema": {"bsonType": "object"}})
    users["users"].create_index([("email", 1)], name="email_1", unique=True)
    docs = [{"_id": ObjectId(), "email": f"u{i}@example.com", "born": dt.datetime(1990, 1, i % 28 + 1),
             "balance": Decimal128("12.50"), "tags": ["a", {"b": i}]} for i in range(2500)]
    users["users"].insert_many(docs)
    users.create_collection("empty")
    monkeypatch.setattr(MongoDumper, "_client", lambda self, target=None: client)
    source = db("events", kind="mongodb", host="fake", dbname="music")
    dumper = MongoDumper(source, None, tmp_path)
    repo, manifest = _backup(tmp_path, dumper)
    assert manifest["dump"]["row_counts"] == {"empty": 0, "users": 2500}
    (tmp_path / "spool").mkdir()
    files = spool(repo, manifest, tmp_path / "spool")
    dumper.restore(files, manifest, Target(source, None), RestoreOptions(target_dbname="copy"))
    assert client["copy"]["users"].docs == docs
    assert client["copy"]["users"].opts == {"validator": {"$jsonSchema": {"bsonType": "object"}}}
    assert {"v": 2, "key": {"email": 1}, "name": "email_1", "unique": True} in client["copy"]["users"].indexes
    assert dumper.count_rows(Target(source, None), RestoreOptions(target_dbname="copy")) == {"users": 2500, "empty": 0}
    with pytest.raises(RestoreRefused, match="not empty"):
        dumper.restore(files, manifest, Target(source, None), RestoreOptions(target_dbname="copy"))


def test_truncated_stream_is_refused_before_any_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeMongoClient()
    client["music"].create_collection("users")
    client["music"]["users"].insert_many([{"_id": i, "n": i} for i in range(10)])
    stream = b"".join(jsonl.encode("mongodb", [("users", {"indexes": [], "options": {}},
                                                ((d["_id"], d) for d in client["music"]["users"].docs))],
                                   lambda d: __import__("json").dumps(d), {}))
    truncated = tmp_path / "collections"
    truncated.write_bytes(stream[: stream.rindex(b'{"type": "end"')])
    monkeypatch.setattr(MongoDumper, "_client", lambda self, target=None: client)
    source = db("events", kind="mongodb", host="fake", dbname="music")
    with pytest.raises(IntegrityError, match="truncated"):
        MongoDumper(source, None, tmp_path).restore({"collections": truncated}, {}, Target(source, None),
                                                    RestoreOptions(target_dbname="copy"))
    assert "copy" not in client or not client["copy"].list_collection_names()


def test_jsonl_decode_rejects_foreign_and_inconsistent_streams() -> None:
    with pytest.raises(IntegrityError, match="foreign header"):
        list(jsonl.decode([b'{"type": "header", "format": "dbfleet-jsonl", "version": 1, "kind": "mongodb"}\n'],
                          "elasticsearch"))
    lines = [b'{"type": "header", "format": "dbfleet-jsonl", "version": 1, "kind": "mongodb"}\n',
             b'{"type": "collection", "name": "a", "meta": {}}\n',
             b'{"type": "end", "counts": {"a": 5}}\n']
    with pytest.raises(IntegrityError, match="counts do not match"):
        list(jsonl.decode(lines, "mongodb"))
    with pytest.raises(IntegrityError, match="not JSON"):
        list(jsonl.decode([lines[0], b"{oops\n"], "mongodb"))


class FakeIndices:
    def __init__(self, es: FakeElasticsearch) -> None:
        self.es = es

    def get(self, index: str, expand_wildcards: str = "open") -> dict[str, Any]:
        prefix = index.rstrip("*")
        return {n: v["meta"] for n, v in self.es.store.items() if n.startswith(prefix) or index == "*"}

    def exists(self, index: str) -> bool:
        return index in self.es.store

    def create(self, index: str, mappings: Any, settings: Any, aliases: Any = None) -> None:
        assert "uuid" not in settings and "creation_date" not in settings  # read-only settings stripped
        self.es.store[index] = {"meta": {"mappings": mappings, "settings": {"index": settings},
                                         "aliases": aliases or {}}, "docs": {}}

    def delete(self, index: str, ignore_unavailable: bool = False) -> None:
        for name in [n for n in self.es.store if n.startswith(index.rstrip("*"))]:
            del self.es.store[name]

    def refresh(self, index: str) -> None:
        return None


class FakeElasticsearch:
    """MOCK: an in-memory Elasticsearch client and helpers (no Elasticsearch server can run here)."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.indices = FakeIndices(self)

    def info(self) -> dict[str, Any]:
        return {"version": {"number": "8.15.0-fake"}}

    def close(self) -> None:
        return None

    def count(self, index: str) -> dict[str, int]:
        return {"count": len(self.store[index]["docs"])}

    # the two helpers the dumper uses
    def scan(self, client: Any, index: str, **_kw: Any) -> list[dict[str, Any]]:
        return [{"_id": k, "_source": v} for k, v in self.store[index]["docs"].items()]

    def bulk(self, client: Any, actions: Any, **_kw: Any) -> None:
        for action in actions:
            self.store[action["_index"]]["docs"][action["_id"]] = action["_source"]


def test_elasticsearch_stream_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    es = FakeElasticsearch()
    es.store["tracks"] = {"meta": {"mappings": {"properties": {"title": {"type": "text"}}},
                                   "settings": {"index": {"number_of_shards": "1", "uuid": "x", "creation_date": "1"}},
                                   "aliases": {"songs": {}}},
                          "docs": {str(i): {"title": f"song {i}", "plays": i} for i in range(1500)}}
    monkeypatch.setattr(ElasticsearchDumper, "_client", lambda self, target=None: es)
    monkeypatch.setattr("engines.backup.dumpers.elasticsearch._helpers", lambda: es)
    source = db("search", kind="elasticsearch", host="fake")
    dumper = ElasticsearchDumper(source, None, tmp_path)
    repo, manifest = _backup(tmp_path, dumper)
    assert manifest["dump"]["row_counts"] == {"tracks": 1500}
    (tmp_path / "spool").mkdir()
    files = spool(repo, manifest, tmp_path / "spool")
    with pytest.raises(RestoreRefused, match="indices exist"):
        dumper.restore(files, manifest, Target(source, None), RestoreOptions())
    dumper.restore(files, manifest, Target(source, None), RestoreOptions(target_dbname="copy-"))
    assert es.store["copy-tracks"]["docs"] == es.store["tracks"]["docs"]
    assert es.store["copy-tracks"]["meta"]["mappings"] == {"properties": {"title": {"type": "text"}}}


def test_iter_reader_feeds_the_chunker() -> None:
    reader = jsonl.IterReader([b"abc", b"", b"defg"])
    buf = bytearray(2)
    out = io.BytesIO()
    while n := reader.readinto(memoryview(buf)):
        out.write(buf[:n])
    assert out.getvalue() == b"abcdefg"
