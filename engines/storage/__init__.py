"""Backup storage targets, chosen by ``type:`` or URL scheme through one alias table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engines.errors import ConfigError
from engines.secrets import resolve_secret
from engines.storage.base import ObjectInfo, Storage, check_key

if TYPE_CHECKING:  # only annotations: `wal push` opens storage without importing the config models
    from engines.config import StorageConfig


def _filesystem(name: str, cfg: StorageConfig) -> Storage:
    from engines.storage.filesystem import FilesystemStorage

    path = cfg.path or (cfg.url.removeprefix("file://") if cfg.url else None)
    if not path:
        raise ConfigError([(f"storage.{name}.path", "a filesystem storage needs 'path'")])
    return FilesystemStorage(path)


def _s3(name: str, cfg: StorageConfig) -> Storage:
    from engines.storage.s3 import S3Storage

    if not cfg.url:
        raise ConfigError([(f"storage.{name}.url", "an s3 storage needs 'url: s3://bucket/prefix'")])
    extra = cfg.model_extra or {}
    access = resolve_secret(f"storage {name!r}", env=extra.get("access_key_env"))
    secret = resolve_secret(f"storage {name!r}", env=extra.get("secret_key_env"))
    return S3Storage(cfg.url, endpoint_url=cfg.endpoint_url, region=extra.get("region"),
                     access_key=access, secret_key=secret,
                     max_connections=int(extra.get("max_connections", 16)))


STORAGES: dict[str, Callable[[str, StorageConfig], Storage]] = {
    "filesystem": _filesystem, "file": _filesystem, "local": _filesystem, "posix": _filesystem,
    "s3": _s3, "minio": _s3,
}


def open_storage(name: str, cfg: StorageConfig) -> Storage:
    """The storage for config entry ``storage.<name>``; unknown types list the known ones."""
    factory = STORAGES.get(cfg.type)
    if factory is None:
        raise ConfigError([(f"storage.{name}.type", f"unknown storage type {cfg.type!r}; known: "
                            f"{', '.join(sorted(STORAGES))}")])
    return factory(name, cfg)


__all__ = ["STORAGES", "ObjectInfo", "Storage", "check_key", "open_storage"]
