"""An in-process stand-in for an Elasticsearch server (none runs here), named as such wherever it is used: the
calls the migration's Elasticsearch target makes (index/bulk/get/exists/delete_by_query, indices.*, and the
search + scroll that ``elasticsearch.helpers.scan`` drives), over dicts. It checks nothing a server would
(mappings, analysis): the tests use it to run the target's logic end to end."""

from __future__ import annotations

import copy
from typing import Any


class _Indices:
    def __init__(self, store: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.store = store

    def exists(self, index: str) -> bool:
        return index in self.store

    def create(self, index: str, **_: Any) -> dict[str, Any]:
        self.store.setdefault(index, {})
        return {"acknowledged": True}

    def refresh(self, index: str | None = None, **_: Any) -> None:
        return None

    def delete(self, index: str, ignore_unavailable: bool = False) -> None:
        self.store.pop(index, None)


class ElasticsearchStandIn:
    """Documents by index and id; ``bulk`` takes index and delete actions."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, dict[str, Any]]] = {}
        self.indices = _Indices(self.store)

    def options(self, **_: Any) -> ElasticsearchStandIn:
        return self

    def index(self, index: str, id: str, document: dict[str, Any], **_: Any) -> None:
        self.store.setdefault(index, {})[id] = copy.deepcopy(document)

    def bulk(self, operations: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        items, ops = [], iter(operations)
        for action in ops:
            (kind, meta), = action.items()
            if kind == "index":
                self.index(meta["_index"], meta["_id"], next(ops))
                items.append({"index": {"_id": meta["_id"], "status": 200}})
            elif kind == "delete":
                found = self.store.get(meta["_index"], {}).pop(meta["_id"], None)
                items.append({"delete": {"_id": meta["_id"], "status": 200 if found is not None else 404}})
        return {"errors": False, "items": items}

    def exists(self, index: str, id: str) -> bool:
        return id in self.store.get(index, {})

    def get(self, index: str, id: str) -> dict[str, Any]:
        return {"_id": id, "_source": copy.deepcopy(self.store[index][id])}

    def delete_by_query(self, index: str, query: dict[str, Any], **_: Any) -> None:
        docs = self.store.get(index, {})
        for i in [i for i, d in docs.items() if _matches(d, query)]:
            del docs[i]

    def search(self, index: str, query: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        hits = [{"_id": i, "_source": copy.deepcopy(d)} for i, d in self.store.get(index, {}).items()
                if _matches(d, query or {"match_all": {}})]
        return {"_scroll_id": "all", "hits": {"hits": hits}, "_shards": {"total": 1, "successful": 1, "skipped": 0}}

    def scroll(self, **_: Any) -> dict[str, Any]:
        return {"_scroll_id": None, "hits": {"hits": []}, "_shards": {"total": 1, "successful": 1, "skipped": 0}}

    def clear_scroll(self, **_: Any) -> None:
        return None


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    if "query" in query:
        query = query["query"]
    if "term" in query:
        (field, value), = query["term"].items()
        return bool(doc.get(field.removesuffix(".keyword")) == value)
    return "match_all" in query
