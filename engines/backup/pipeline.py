"""Streaming pipelines: a dump's stdout -> chunks -> ids -> zstd -> AES-GCM -> storage, and back.

Memory bound: at most ``inflight`` chunks are being stored at once, each at most
``max_size`` (4 MiB) of plaintext plus its compressed and encrypted copies, so a backup
stream holds at most ``inflight * 3 * 4 MiB`` (96 MiB with 8 in flight; the engine uses 8 on a
filesystem, 16 on S3) whatever the database size; a restore holds ``prefetch * 2 * 4 MiB``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Protocol

from pyfastcdc import FastCDC

from engines.backup.repository import Repository
from engines.errors import IntegrityError

Progress = Callable[[int], None]


class Readable(Protocol):
    def readinto(self, b: memoryview) -> int: ...


@dataclass
class StreamRecord:
    """One stream of a backup as its manifest records it."""

    name: str
    format: str
    size: int = 0
    sha256: str = ""
    chunks: list[list[Any]] = field(default_factory=list)  # [chunk id, plaintext length]
    new_chunks: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChunkWriter:
    """Stores streams into a repository, skipping chunks it already holds (``known``)."""

    def __init__(self, repo: Repository, known: set[str], *, level: int | None, threads: int = 2,
                 inflight: int = 8, progress: Progress | None = None) -> None:
        self.repo = repo
        self.known = known
        self.level = level
        self.inflight = inflight
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="dbfleet-chunk")
        self.progress = progress or (lambda n: None)
        self._lock = threading.Lock()
        chunker = repo.config["chunker"]
        self.cdc = FastCDC(chunker["avg_size"], min_size=chunker["min_size"], max_size=chunker["max_size"],
                           normalized_chunking=chunker["normalized_chunking"], seed=chunker["seed"])

    def _store(self, data: bytes) -> tuple[str, int, int]:
        cid = self.repo.cipher.chunk_id(data)
        with self._lock:
            if cid in self.known:
                return cid, len(data), -1
            self.known.add(cid)
        try:
            return cid, len(data), self.repo.put_chunk(cid, data, self.level)
        except BaseException:
            with self._lock:
                self.known.discard(cid)
            raise

    def write(self, name: str, fmt: str, reader: Readable | BinaryIO) -> StreamRecord:
        """Chunk and store everything ``reader`` yields until EOF."""
        record = StreamRecord(name, fmt)
        sha = hashlib.sha256()
        slots = threading.BoundedSemaphore(self.inflight)
        futures: list[Future[tuple[str, int, int]]] = []
        failed: list[BaseException] = []

        def done(fut: Future[tuple[str, int, int]]) -> None:
            slots.release()
            if fut.exception() is not None:
                failed.append(fut.exception())  # type: ignore[arg-type]

        for chunk in self.cdc.cut_stream(reader):
            if failed:
                break
            data = bytes(chunk.data)
            sha.update(data)
            record.size += len(data)
            slots.acquire()
            fut = self.pool.submit(self._store, data)
            fut.add_done_callback(done)
            futures.append(fut)
            self.progress(len(data))
        for fut in futures:
            cid, length, stored = fut.result()  # re-raises the first storage error
            record.chunks.append([cid, length])
            if stored >= 0:
                record.new_chunks += 1
                record.new_bytes += length
                record.stored_bytes += stored
        record.sha256 = sha.hexdigest()
        return record

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def read_stream(repo: Repository, record: dict[str, Any], sink: BinaryIO, *, threads: int = 4,
                prefetch: int = 8, progress: Progress | None = None) -> int:
    """Write a stream's plaintext to ``sink``, checking every chunk and the whole stream's sha256."""
    sha = hashlib.sha256()
    size = 0
    queue: deque[Future[bytes]] = deque()
    chunks = iter(record["chunks"])
    with ThreadPoolExecutor(threads, thread_name_prefix="dbfleet-restore") as pool:
        for cid, length in chunks:
            queue.append(pool.submit(repo.get_chunk, cid, length, rehash=False))
            if len(queue) >= prefetch:
                size += _drain_one(queue, sink, sha, progress)
        while queue:
            size += _drain_one(queue, sink, sha, progress)
    if size != record["size"] or sha.hexdigest() != record["sha256"]:
        raise IntegrityError(f"stream {record['name']}: reassembled data does not match the manifest "
                             f"(size {size} vs {record['size']}, sha256 mismatch)")
    return size


def _drain_one(queue: deque[Future[bytes]], sink: BinaryIO, sha: Any, progress: Progress | None) -> int:
    data = queue.popleft().result()
    sha.update(data)
    sink.write(data)
    if progress:
        progress(len(data))
    return len(data)
