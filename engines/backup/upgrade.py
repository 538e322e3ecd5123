"""``dbfleet repo upgrade``: format version 1 -> 2 (authenticated config, key slots and index)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engines.backup import crypto
from engines.backup.locks import EXCLUSIVE, RepoLock
from engines.backup.repository import VERSION, Repository, canonical
from engines.errors import RepositoryError, WrongKeyError
from engines.storage import Storage


def upgrade(storage: Storage, secret: str | None) -> dict[str, Any]:
    """MAC the config and every key slot, index every manifest, set version 2 (idempotent)."""
    config = json.loads(storage.get("config"))
    if config.get("version") == VERSION:
        return {"upgraded": False, "version": VERSION}
    if config.get("version") != 1:
        raise RepositoryError(f"{storage.describe()}: cannot upgrade format version {config.get('version')!r}")
    with RepoLock(storage, EXCLUSIVE, "upgrade", wait=60):
        cipher = crypto.Cipher(None)
        if config["encryption"] != "none":
            if not secret:
                raise WrongKeyError(f"{storage.describe()}: upgrading an encrypted repository needs its key")
            slots = [(i.key, json.loads(storage.get(i.key))) for i in storage.list("keys/")]
            masters = [m for _k, s in slots if (m := crypto.unwrap(s, secret, config["id"])) is not None]
            if not masters:
                raise WrongKeyError(f"{storage.describe()}: wrong key: it opens none of the key slots")
            cipher = crypto.Cipher(masters[0])
            for key, slot in slots:
                slot["mac"] = cipher.mac(b"slot:" + canonical(slot))
                storage.put(key, json.dumps(slot, indent=1).encode())
        repo = Repository(storage, config, cipher)
        indexed = 0
        for info in storage.list("backups/"):
            parts = info.key.split("/")
            if len(parts) != 3:
                continue
            body = cipher.open(storage.get(info.key), info.key)
            manifest = json.loads(body)
            entry = {"database_id": parts[1], "backup_id": parts[2], "finished_at": manifest.get("finished_at"),
                     "manifest_sha256": hashlib.sha256(body).hexdigest()}
            key = repo.index_key(parts[1], parts[2])
            storage.put(key, cipher.seal(json.dumps(entry).encode(), key, level=None))
            indexed += 1
        config["version"] = VERSION
        if cipher.encrypted:
            config["mac"] = cipher.mac(canonical(config))
        storage.put("config", json.dumps(config, indent=1).encode())
    return {"upgraded": True, "version": VERSION, "backups_indexed": indexed}
