"""The storage contract: objects under a prefix, same behaviour on a filesystem and on S3."""

from __future__ import annotations

import abc
import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass

from engines.errors import StorageError

_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key relative to the storage root and its size in bytes."""

    key: str
    size: int


def check_key(key: str) -> str:
    """Refuse keys that could escape the prefix (``..``, absolute paths, odd characters)."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"refusing object key {key!r}: only letters, digits, '_.=-' and '/' are allowed")
    return key


class Storage(abc.ABC):
    """Objects addressed by ``/``-separated keys under one root or prefix.

    Contract:
    - ``put`` is atomic: a reader sees the whole new object or none of it, never a part;
      a crash during ``put`` leaves no object under ``key`` (temporary files may remain and
      are invisible to ``list``). Overwriting an existing key is allowed.
    - ``put_new`` is ``put`` that fails with ``False`` when the key already exists (used for locks
      and key slots); on S3 it is a conditional write (``If-None-Match: *``).
    - ``get`` returns the bytes or raises :class:`ObjectMissing`; ``exists`` never raises for a
      missing key.
    - ``delete`` is idempotent: deleting a missing key is not an error.
    - ``list(prefix)`` yields every object whose key starts with ``prefix``, in no given order,
      and reflects every ``put``/``delete`` that returned before it was called.
    - Methods are safe to call from several threads at once.
    - Error messages name the target by ``describe()``, never by credentials.
    """

    scheme = ""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically."""

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless it exists; True when this call created it."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True when ``key`` is stored."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is absent."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this storage points, without credentials."""

    def remove_temporary(self, older_than: float) -> builtins.list[str]:
        """Delete temporary files of crashed puts last modified more than ``older_than`` seconds ago;
        returns their paths. Backends whose puts leave nothing behind (S3) have none."""
        return []

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Create the container (directory, bucket) when missing; called when a repository is created."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release clients; idempotent."""
