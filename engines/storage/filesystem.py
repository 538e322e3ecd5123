"""A repository on a local or NFS path: atomic puts by write, fsync, rename."""

from __future__ import annotations

import builtins
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from engines.errors import ObjectMissing, StorageError
from engines.storage.base import ObjectInfo, Storage, check_key

_TMP_SUFFIX = ".dbfleet-tmp"


class FilesystemStorage(Storage):
    scheme = "filesystem"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=_TMP_SUFFIX, dir=path.parent)
        except OSError as exc:
            raise StorageError(f"{self.describe()}: cannot write {path.parent}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)

    def put_new(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # link() fails when the name exists: atomic create-if-absent
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{self.describe()}: object {key} is missing") from None
        except OSError as exc:
            raise StorageError(f"{self.describe()}: cannot read {key}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.endswith(_TMP_SUFFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        yield ObjectInfo(key, full.stat().st_size)
                    except FileNotFoundError:  # deleted while listing
                        continue

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def remove_temporary(self, older_than: float) -> builtins.list[str]:
        cutoff = time.time() - older_than
        removed = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = Path(dirpath) / name
                try:
                    if name.endswith(_TMP_SUFFIX) and full.stat().st_mtime < cutoff:
                        full.unlink()
                        removed.append(full.relative_to(self.root).as_posix())
                except FileNotFoundError:  # finished or removed meanwhile
                    continue
        return removed

    def describe(self) -> str:
        return f"filesystem:{self.root}"
