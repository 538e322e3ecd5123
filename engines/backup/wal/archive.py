"""The WAL archive of one database: ``wal/<database id>/<file name>`` index objects over ordinary chunks.

Each archived file is chunked, deduplicated, compressed and encrypted by the same pipeline as
backups; its index object (an envelope whose JSON payload lists the chunks, size and sha256)
is written last with an exclusive create, so a file is archived exactly when its index exists.
A push never lists the repository: it probes the few chunk names it needs and its own index.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.backup.locks import SHARED, RepoLock
from engines.backup.pipeline import ChunkWriter, read_stream
from engines.backup.repository import Repository, utcnow
from engines.backup.wal import names
from engines.errors import IntegrityError, ObjectMissing, RepositoryError
from engines.storage import check_key

INDEX_FORMAT = "dbfleet-wal"


class WalConflict(RepositoryError):
    """A different file is already archived under this name."""


class StoredChunks(set):  # type: ignore[type-arg]
    """A ``known`` set for ChunkWriter that asks the storage instead of listing it (one probe per chunk)."""

    def __init__(self, repo: Repository) -> None:
        super().__init__()
        self.repo = repo

    def __contains__(self, chunk_id: object) -> bool:
        if set.__contains__(self, chunk_id):
            return True
        return isinstance(chunk_id, str) and self.repo.storage.exists(self.repo.chunk_key(chunk_id))


@dataclass
class PushResult:
    """What one ``wal push`` did."""

    name: str
    size: int
    status: str  # "archived" | "already archived"
    new_bytes: int = 0
    stored_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class WalArchive:
    """Push, fetch and list the archived WAL files of ``database_id``."""

    def __init__(self, repo: Repository, database_id: str) -> None:
        self.repo = repo
        self.database_id = check_key(database_id)
        self.prefix = f"wal/{self.database_id}/"

    def key(self, name: str) -> str:
        return check_key(self.prefix + names.check_name(name))

    # -- index objects --------------------------------------------------------------------
    def load(self, name: str) -> dict[str, Any] | None:
        """The index of an archived file, or None when it is not archived."""
        key = self.key(name)
        try:
            blob = self.repo.storage.get(key)
        except ObjectMissing:
            return None
        try:
            record: dict[str, Any] = json.loads(self.repo.cipher.open(blob, key))
        except ValueError:
            raise IntegrityError(f"{key}: the WAL index is not valid JSON") from None
        if record.get("name") != name or record.get("database_id") != self.database_id:
            raise IntegrityError(f"{key}: the WAL index names another file")
        return record

    def names(self) -> list[str]:
        """Every archived file name, sorted."""
        return sorted(info.key.rsplit("/", 1)[1] for info in self.repo.storage.list(self.prefix))

    def pushed_at(self) -> dict[str, str]:
        """Segment name -> when it was archived (reads every index: restores and verify only)."""
        out = {}
        for name in self.names():
            record = self.load(name)
            if record is not None:
                out[name] = record["pushed_at"]
        return out

    # -- push / fetch ---------------------------------------------------------------------
    def push(self, path: Path, *, level: int | None = 3, lock_wait: float = 60.0) -> PushResult:
        """Archive the file at ``path``; the same content again is success, other content is refused."""
        name = names.check_name(path.name)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        existing = self.load(name)
        if existing is not None:
            return self._same(existing, name, len(data), digest)
        with RepoLock(self.repo.storage, SHARED, f"wal push {self.database_id}", wait=lock_wait):
            writer = ChunkWriter(self.repo, StoredChunks(self.repo), level=level, threads=2, inflight=6)
            try:
                stream = writer.write(name, "wal", io.BytesIO(data))
            finally:
                writer.close()
            record = {"format": INDEX_FORMAT, "version": 1, "repository": self.repo.id,
                      "database_id": self.database_id, "pushed_at": utcnow().isoformat(),
                      **stream.to_dict()}
            key = self.key(name)
            blob = self.repo.cipher.seal(json.dumps(record).encode(), key, level=3)
            if not self.repo.storage.put_new(key, blob):  # a concurrent push of the same name won
                return self._same(self.load(name) or {}, name, len(data), digest)
        return PushResult(name, len(data), "archived", stream.new_bytes, stream.stored_bytes)

    def _same(self, existing: dict[str, Any], name: str, size: int, digest: str) -> PushResult:
        if existing.get("sha256") == digest and existing.get("size") == size:
            return PushResult(name, size, "already archived")
        raise WalConflict(f"{self.key(name)}: a different file is already archived under this name "
                          f"({existing.get('size')} bytes, sha256 {str(existing.get('sha256'))[:12]}…; this one: "
                          f"{size} bytes, {digest[:12]}…). Two clusters may be archiving to the same "
                          "database id, or this cluster was restored without a new id; refusing to overwrite.")

    def fetch(self, name: str, dest: Path) -> bool:
        """Write the archived file ``name`` to ``dest`` (verified); False when it is not archived."""
        record = self.load(name)
        if record is None:
            return False
        tmp = dest.with_name(f".{dest.name}.dbfleet-tmp")
        try:
            with open(tmp, "wb") as fh:
                read_stream(self.repo, record, fh, threads=2, prefetch=4)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def chunk_refs(self) -> set[str]:
        """Chunk ids every archived file references (garbage collection keeps them)."""
        refs: set[str] = set()
        for name in self.names():
            record = self.load(name)
            if record is None:
                continue
            refs.update(cid for cid, _len in record["chunks"])
        return refs

    def delete(self, name: str) -> None:
        self.repo.storage.delete(self.key(name))


def archived_databases(repo: Repository) -> list[str]:
    """Ids of databases with a WAL archive in ``repo``."""
    found = {info.key.split("/")[1] for info in repo.storage.list("wal/") if info.key.count("/") == 2}
    return sorted(found)
