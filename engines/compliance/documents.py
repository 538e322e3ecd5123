"""Document stores: MongoDB collections and Elasticsearch indices sampled at random, documents flattened to
field paths (``address.street``, ``phones[]``) which are classified like columns."""

from __future__ import annotations

from typing import Any

from engines.compliance.base import ColumnInfo, Discoverer, TableInfo

MAX_FIELDS = 500


def flatten(doc: Any, prefix: str = "", out: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """Field path -> scalar values found under it (arrays contribute each element under ``path[]``)."""
    out = {} if out is None else out
    if isinstance(doc, dict):
        for k, v in doc.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(doc, (list, tuple)):
        for v in doc[:20]:
            flatten(v, f"{prefix}[]", out)
    elif prefix and prefix != "_id":
        out.setdefault(prefix, []).append(doc)
    return out


class DocumentDiscoverer(Discoverer):
    """Samples documents once per collection in ``tables`` (the catalog of a schemaless store is its data)."""

    kind = "documents"

    def collections(self) -> list[str]:
        """Collection (index) names, system ones left out."""
        raise NotImplementedError

    def documents(self, name: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` documents of ``name`` chosen at random by the server."""
        raise NotImplementedError

    def tables(self) -> list[TableInfo]:
        n = int(self.settings.get("sample_size", 100))
        out = []
        for name in self.collections():
            docs = [flatten(d) for d in self.documents(name, n)]
            paths = sorted({p for d in docs for p in d})[:MAX_FIELDS]
            cols = [ColumnInfo(p, "field") for p in paths]
            out.append(TableInfo(name, cols, rows_estimate=len(docs), ident=docs))
        return out

    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        rows = []
        for doc in table.ident:  # one row per document; array fields spread over several rows
            lists = [doc.get(c.name) or [] for c in columns]
            for i in range(max((len(v) for v in lists), default=0)):
                rows.append(tuple(v[i] if i < len(v) else None for v in lists))
        return rows[: n * 4]


class MongoDiscoverer(DocumentDiscoverer):
    kind = "mongodb"

    def _db(self) -> Any:
        return self.connector.conn[self.connector.db.dbname]

    def collections(self) -> list[str]:
        return sorted(c for c in self._db().list_collection_names() if not c.startswith("system."))

    def documents(self, name: str, n: int) -> list[dict[str, Any]]:
        ms = int(self.timeout * 1000)
        return list(self._db()[name].aggregate([{"$sample": {"size": n}}], maxTimeMS=ms))


class ElasticsearchDiscoverer(DocumentDiscoverer):
    kind = "elasticsearch"

    def collections(self) -> list[str]:
        return sorted(i for i in self.connector.conn.indices.get_alias(index="*") if not i.startswith("."))

    def documents(self, name: str, n: int) -> list[dict[str, Any]]:
        query = {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": self.seed or 0,
                                                                                 "field": "_seq_no"}}}
        if self.seed is None:
            query["function_score"]["random_score"] = {}
        hits = self.connector.conn.search(index=name, query=query, size=n, timeout=f"{int(self.timeout)}s")
        return [h.get("_source", {}) for h in hits["hits"]["hits"]]
