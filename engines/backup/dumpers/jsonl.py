"""The driver-export stream shared by MongoDB and Elasticsearch: JSON lines, one record each.

    {"type": "header", "format": "dbfleet-jsonl", "version": 1, "kind": "mongodb"}
    {"type": "collection", "name": "users", "meta": {...indexes / mappings, settings...}}
    {"type": "doc", "collection": "users", "id": "...", "doc": {...}}
    {"type": "end", "counts": {"users": 123}}

Documents are encoded by the kind (MongoDB: canonical Extended JSON, so ObjectId, dates and
decimals survive). A stream without its ``end`` record is truncated and is refused.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from engines.errors import IntegrityError

FORMAT = "dbfleet-jsonl"


class IterReader(io.RawIOBase):
    """A readable binary stream over an iterator of byte strings (for the chunker)."""

    def __init__(self, parts: Iterable[bytes]) -> None:
        self._parts = iter(parts)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._parts)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def encode(kind: str, collections: Iterable[tuple[str, dict[str, Any], Iterable[tuple[Any, Any]]]],
           dumps: Callable[[Any], str], counts: dict[str, int]) -> Iterator[bytes]:
    """Lines of a stream: ``collections`` yields (name, meta, (id, doc) pairs); ``counts`` fills up."""
    yield _line({"type": "header", "format": FORMAT, "version": 1, "kind": kind})
    for name, meta, docs in collections:
        yield _line({"type": "collection", "name": name, "meta": meta})
        counts[name] = 0
        batch = []
        for doc_id, doc in docs:
            batch.append(f'{{"type":"doc","collection":{json.dumps(name)},"id":{json.dumps(doc_id, default=str)},'
                         f'"doc":{dumps(doc)}}}\n')
            counts[name] += 1
            if len(batch) >= 1000:
                yield "".join(batch).encode()
                batch = []
        if batch:
            yield "".join(batch).encode()
    yield _line({"type": "end", "counts": counts})


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, default=str) + "\n").encode()


def decode(lines: Iterable[bytes], kind: str) -> Iterator[dict[str, Any]]:
    """Records of a stream, checked: header first, ``end`` last, counts matching."""
    seen: dict[str, int] = {}
    header = ended = False
    for number, raw in enumerate(lines, 1):
        if ended:
            raise IntegrityError(f"{kind} stream: data after the end record (line {number})")
        try:
            record = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"{kind} stream: line {number} is not JSON") from None
        rtype = record.get("type")
        if not header:
            if rtype != "header" or record.get("format") != FORMAT or record.get("kind") != kind:
                raise IntegrityError(f"{kind} stream: missing or foreign header")
            header = True
            continue
        if rtype == "doc":
            seen[record["collection"]] = seen.get(record["collection"], 0) + 1
        elif rtype == "end":
            ended = True
            if {k: v for k, v in record["counts"].items() if v} != {k: v for k, v in seen.items() if v}:
                raise IntegrityError(f"{kind} stream: document counts do not match the end record")
        yield record
    if not ended:
        raise IntegrityError(f"{kind} stream is truncated (no end record)")
