"""MongoDB: every collection of ``dbname`` with its indexes and options, via pymongo (no mongodump needed).

No MongoDB server runs on the development machines: the round trip runs when
DBFLEET_TEST_MONGODB_URL is set; unit tests cover the stream with a named fake client.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from engines.backup.dumpers import jsonl
from engines.backup.dumpers.base import Dumper, DumpInfo, RestoreOptions, Target, Write
from engines.connectors.mongodb import MongoConnector
from engines.errors import DriverMissingError, RestoreRefused

BATCH = 1000


def _json_util() -> Any:
    try:
        from bson import json_util
    except ImportError:
        raise DriverMissingError("pymongo", "mongodb") from None
    return json_util


class MongoDumper(Dumper):
    kind = "mongodb"

    def _client(self, target: Target | None = None) -> Any:
        db, password = (self.db, self.password) if target is None else (target.db, target.password)
        return MongoConnector(db, password).conn

    def backup(self, write: Write) -> DumpInfo:
        with closing(self._client()) as client:
            return self._backup(client, write)

    def _backup(self, client: Any, write: Write) -> DumpInfo:
        util = _json_util()
        database = client[self.db.dbname or "test"]
        counts: dict[str, int] = {}

        def collections() -> Iterator[tuple[str, dict[str, Any], Iterator[tuple[Any, Any]]]]:
            for name in sorted(database.list_collection_names()):
                coll = database[name]
                meta = {"indexes": [dict(ix) for ix in coll.list_indexes()], "options": dict(coll.options())}
                yield name, meta, ((doc.get("_id"), doc) for doc in coll.find({}, batch_size=BATCH))

        dumps = lambda doc: util.dumps(doc, json_options=util.CANONICAL_JSON_OPTIONS)  # noqa: E731
        write("collections", "dbfleet-jsonl", jsonl.IterReader(jsonl.encode("mongodb", collections(), dumps, counts)))
        version = client.server_info().get("version", "unknown")
        return DumpInfo(tool="pymongo", tool_version=_pymongo_version(), server_version=version,
                        row_counts=counts, row_counts_exact=False)

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        util = _json_util()
        name = options.target_dbname or target.db.dbname or "test"
        with closing(self._client(target)) as client:
            database = client[name]
            if database.list_collection_names() and not options.clean:
                raise RestoreRefused(f"mongodb database {name!r} on {target.db.id!r} is not empty; pass clean=true")
            with open(files["collections"], "rb") as fh:
                for _record in jsonl.decode(fh, "mongodb"):  # a first pass validates before anything is written
                    pass
            with open(files["collections"], "rb") as fh:
                self._load(database, jsonl.decode(fh, "mongodb"), util, options)
        return {"target": target.db.id, "dbname": name}

    def _load(self, database: Any, records: Any, util: Any, options: RestoreOptions) -> None:
        batch: list[Any] = []
        current = None
        for record in records:
            if record["type"] == "collection":
                self._flush(database, current, batch)
                current = record["name"]
                if options.clean:
                    database.drop_collection(current)
                self._create(database, current, record["meta"])
            elif record["type"] == "doc":
                batch.append(util.loads(json.dumps(record["doc"])))
                if len(batch) >= BATCH:
                    self._flush(database, current, batch)
        self._flush(database, current, batch)

    @staticmethod
    def _create(database: Any, name: str, meta: dict[str, Any]) -> None:
        database.create_collection(name, **{k: v for k, v in meta.get("options", {}).items()})
        for index in meta.get("indexes", []):
            if index.get("name") == "_id_":
                continue
            keys = list(index["key"].items())
            extra = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
            database[name].create_index(keys, **extra)

    @staticmethod
    def _flush(database: Any, name: str | None, batch: list[Any]) -> None:
        if name and batch:
            database[name].insert_many(batch, ordered=False)
        batch.clear()

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        with closing(self._client(target)) as client:
            database = client[options.target_dbname or target.db.dbname or "test"]
            return {name: int(database[name].count_documents({})) for name in database.list_collection_names()}

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        target = Target(self.db, self.password)
        name = f"dbfleet_drill_{secrets.token_hex(4)}"
        try:
            yield target, RestoreOptions(target_dbname=name)
        finally:
            with closing(self._client(target)) as client:
                client.drop_database(name)


def _pymongo_version() -> str:
    import pymongo

    return str(pymongo.version)
