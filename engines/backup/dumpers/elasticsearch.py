"""Elasticsearch: every index (mappings, settings, aliases and documents) via the official client.

No Elasticsearch server runs on the development machines: the round trip runs when
DBFLEET_TEST_ELASTICSEARCH_URL is set; unit tests cover the stream with a named fake client.
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
from engines.connectors.elasticsearch import ElasticsearchConnector
from engines.errors import DriverMissingError, RestoreRefused

# settings the cluster owns; they cannot be given to indices.create
READ_ONLY_SETTINGS = {"uuid", "creation_date", "provided_name", "version", "routing", "resize", "history"}
BATCH = 1000


def _helpers() -> Any:
    try:
        from elasticsearch import helpers
    except ImportError:
        raise DriverMissingError("elasticsearch", "elasticsearch") from None
    return helpers


def index_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """Mappings, user settings and aliases of one index from ``indices.get``."""
    settings = dict(raw.get("settings", {}).get("index", {}))
    return {"mappings": raw.get("mappings", {}), "aliases": raw.get("aliases", {}),
            "settings": {k: v for k, v in settings.items() if k not in READ_ONLY_SETTINGS}}


class ElasticsearchDumper(Dumper):
    kind = "elasticsearch"

    def _client(self, target: Target | None = None) -> Any:
        db, password = (self.db, self.password) if target is None else (target.db, target.password)
        return ElasticsearchConnector(db, password).conn

    def _pattern(self, options: RestoreOptions | None = None) -> str:
        return (options.target_dbname if options else None) or self.db.dbname or "*"

    def backup(self, write: Write) -> DumpInfo:
        with closing(self._client()) as client:
            return self._backup(client, write)

    def _backup(self, client: Any, write: Write) -> DumpInfo:
        helpers = _helpers()
        indices = client.indices.get(index=self._pattern(), expand_wildcards="open")
        counts: dict[str, int] = {}

        def collections() -> Iterator[tuple[str, dict[str, Any], Iterator[tuple[Any, Any]]]]:
            for name in sorted(n for n in indices if not n.startswith(".")):
                hits = helpers.scan(client, index=name, query={"query": {"match_all": {}}}, size=BATCH,
                                    preserve_order=False)
                yield name, index_meta(indices[name]), ((h["_id"], h["_source"]) for h in hits)

        write("indices", "dbfleet-jsonl",
              jsonl.IterReader(jsonl.encode("elasticsearch", collections(), json.dumps, counts)))
        version = client.info()["version"]["number"]
        return DumpInfo(tool="elasticsearch-py", tool_version=_es_version(), server_version=str(version),
                        row_counts=counts, row_counts_exact=False)

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        with closing(self._client(target)) as client:
            return self._restore(client, files, target, options)

    def _restore(self, client: Any, files: dict[str, Path], target: Target, options: RestoreOptions) -> dict[str, Any]:
        helpers = _helpers()
        prefix = options.target_dbname or ""
        with open(files["indices"], "rb") as fh:
            names = [r["name"] for r in jsonl.decode(fh, "elasticsearch") if r["type"] == "collection"]
        existing = [prefix + n for n in names if client.indices.exists(index=prefix + n)]
        if existing and not options.clean:
            raise RestoreRefused(f"indices exist on {target.db.id!r}: {', '.join(existing)}; pass clean=true "
                                 "or a target_dbname prefix")
        with open(files["indices"], "rb") as fh:
            helpers.bulk(client, self._actions(client, jsonl.decode(fh, "elasticsearch"), prefix, options),
                         chunk_size=BATCH, refresh=True)
        return {"target": target.db.id, "indices": [prefix + n for n in names]}

    @staticmethod
    def _actions(client: Any, records: Any, prefix: str, options: RestoreOptions) -> Iterator[dict[str, Any]]:
        for record in records:
            if record["type"] == "collection":
                name, meta = prefix + record["name"], record["meta"]
                if options.clean:
                    client.indices.delete(index=name, ignore_unavailable=True)
                client.indices.create(index=name, mappings=meta["mappings"], settings=meta["settings"],
                                      aliases=meta["aliases"] if not prefix else None)
            elif record["type"] == "doc":
                yield {"_index": prefix + record["collection"], "_id": record["id"], "_source": record["doc"]}

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        prefix = options.target_dbname or ""
        with closing(self._client(target)) as client:
            client.indices.refresh(index=f"{prefix}*")
            return {name[len(prefix):]: int(client.count(index=name)["count"])
                    for name in client.indices.get(index=f"{prefix}*") if not name.startswith(".")}

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        target = Target(self.db, self.password)
        prefix = f"dbfleet-drill-{secrets.token_hex(4)}-"
        try:
            yield target, RestoreOptions(target_dbname=prefix)
        finally:
            with closing(self._client(target)) as client:
                client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)


def _es_version() -> str:
    import elasticsearch

    return ".".join(str(p) for p in elasticsearch.__versionstr__.split(".")[:3])
