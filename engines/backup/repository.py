"""The repository: config, key slots, chunks and manifests on a Storage (layout in docs/backup-repository.md)."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any

from engines.backup import crypto
from engines.errors import IntegrityError, ObjectMissing, RepositoryError, WrongKeyError
from engines.storage import Storage, check_key

log = logging.getLogger("dbfleet.backup")

FORMAT = "dbfleet-repository"
VERSION = 1
CHUNKER = {"algorithm": "fastcdc2020", "avg_size": 1 << 20, "min_size": 256 << 10, "max_size": 4 << 20,
           "normalized_chunking": 1, "seed": 0}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_backup_id(now: datetime | None = None) -> str:
    """Time-sortable to the millisecond and unique: ``20261124T101500123Z-1a2b3c``."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


class Repository:
    """One repository. Open it with :meth:`open` (or create it with :meth:`init`)."""

    def __init__(self, storage: Storage, config: dict[str, Any], cipher: crypto.Cipher) -> None:
        self.storage = storage
        self.config = config
        self.cipher = cipher
        self.id: str = config["id"]

    # -- life cycle ------------------------------------------------------------------------
    @classmethod
    def init(cls, storage: Storage, secret: str | None, *, encryption: bool = True,
             label: str = "initial") -> Repository:
        """Create a repository; refuses when one exists. Encryption needs ``secret``."""
        if encryption and not secret:
            raise RepositoryError(f"{storage.describe()}: an encrypted repository needs a key "
                                  "(set key_file or key_env on the storage target, or encryption: false)")
        config = {"format": FORMAT, "version": VERSION, "id": uuid.uuid4().hex,
                  "created": utcnow().isoformat(), "chunker": CHUNKER,
                  "encryption": "aes-256-gcm" if encryption else "none",
                  "chunk_id": "hmac-sha256" if encryption else "sha256", "compression": "zstd"}
        storage.prepare()
        if not storage.put_new("config", json.dumps(config, indent=1).encode()):
            raise RepositoryError(f"{storage.describe()}: a repository already exists here")
        master = crypto.new_master() if encryption else None
        repo = cls(storage, config, crypto.Cipher(master))
        if master is not None and secret is not None:
            repo._write_slot(master, secret, label)
        log.info("initialised repository %s on %s", repo.id, storage.describe())
        return repo

    @classmethod
    def open(cls, storage: Storage, secret: str | None) -> Repository:
        """Open an existing repository with the user's key."""
        try:
            config = json.loads(storage.get("config"))
        except ObjectMissing:
            raise RepositoryError(f"{storage.describe()}: no repository here "
                                  "(run `dbfleet repo init` or take a backup to create one)") from None
        except ValueError:
            raise IntegrityError(f"{storage.describe()}: the repository config is not JSON") from None
        if config.get("format") != FORMAT or config.get("version") != VERSION:
            raise RepositoryError(f"{storage.describe()}: unknown repository format "
                                  f"{config.get('format')!r} version {config.get('version')!r}")
        if config["encryption"] == "none":
            return cls(storage, config, crypto.Cipher(None))
        if not secret:
            raise WrongKeyError(f"{storage.describe()}: the repository is encrypted; no key was given "
                                "(key_file or key_env on the storage target)")
        for slot in cls._slots(storage):
            master = crypto.unwrap(slot, secret, config["id"])
            if master is not None:
                return cls(storage, config, crypto.Cipher(master))
        raise WrongKeyError(f"{storage.describe()}: wrong key: it opens none of the repository's key slots")

    @classmethod
    def open_or_init(cls, storage: Storage, secret: str | None, *, encryption: bool = True) -> Repository:
        """Open the repository, creating it on first use."""
        if not storage.exists("config"):
            try:
                return cls.init(storage, secret, encryption=encryption)
            except RepositoryError:
                if not storage.exists("config"):
                    raise  # lost a creation race only if the config now exists
        return cls.open(storage, secret)

    # -- key slots ----------------------------------------------------------------------------
    @staticmethod
    def _slots(storage: Storage) -> list[dict[str, Any]]:
        return [json.loads(storage.get(info.key)) for info in storage.list("keys/")]

    def _write_slot(self, master: bytes, secret: str, label: str) -> str:
        key_id = secrets.token_hex(4)
        slot = crypto.wrap(master, secret, self.id, key_id, label) | {"created": utcnow().isoformat()}
        if not self.storage.put_new(f"keys/{key_id}", json.dumps(slot, indent=1).encode()):
            raise RepositoryError(f"key slot {key_id} exists already; retry")
        return key_id

    def keys(self) -> list[dict[str, Any]]:
        """The key slots (id, label, created); never the wrapped material."""
        return [{k: s[k] for k in ("id", "label", "created") if k in s} for s in self._slots(self.storage)]

    def add_key(self, new_secret: str, label: str) -> str:
        """Wrap the data key under one more key; no data is rewritten."""
        if self.cipher.master is None:
            raise RepositoryError("the repository is not encrypted; it has no keys")
        return self._write_slot(self.cipher.master, new_secret, label)

    def remove_key(self, key_id: str) -> None:
        """Drop a key slot; refuses to drop the last one."""
        ids = [s["id"] for s in self._slots(self.storage)]
        if key_id not in ids:
            raise RepositoryError(f"no key slot {key_id!r} (slots: {', '.join(ids)})")
        if len(ids) == 1:
            raise RepositoryError("refusing to remove the last key slot: the repository would be unreadable")
        self.storage.delete(f"keys/{key_id}")

    def slots_opened_by(self, secret: str) -> list[str]:
        """The ids of the slots that ``secret`` opens."""
        return [s["id"] for s in self._slots(self.storage) if crypto.unwrap(s, secret, self.id) is not None]

    # -- chunks -------------------------------------------------------------------------------
    @staticmethod
    def chunk_key(chunk_id: str) -> str:
        return f"data/{chunk_id[:2]}/{chunk_id}"

    def put_chunk(self, chunk_id: str, payload: bytes, level: int | None) -> int:
        """Store one chunk (idempotent); returns the stored size."""
        key = self.chunk_key(chunk_id)
        blob = self.cipher.seal(payload, key, level=level)
        self.storage.put(key, blob)
        return len(blob)

    def get_chunk(self, chunk_id: str, length: int | None = None, *, rehash: bool = True) -> bytes:
        """One chunk's plaintext, authenticated and (``rehash``) re-hashed against its id.

        In an encrypted repository the AEAD tag, bound to the object's name (the id), already proves
        the content is what a key holder stored under that id; restores skip the re-hash there,
        ``verify --read-data`` always does it."""
        key = self.chunk_key(chunk_id)
        try:
            data = self.cipher.open(self.storage.get(key), key)
        except ObjectMissing:
            raise IntegrityError(f"chunk {chunk_id[:16]}… is missing ({key})") from None
        if length is not None and len(data) != length:
            raise IntegrityError(f"chunk {chunk_id[:16]}…: {len(data)} bytes, the manifest says {length}")
        if (rehash or not self.cipher.encrypted) and self.cipher.chunk_id(data) != chunk_id:
            raise IntegrityError(f"chunk {chunk_id[:16]}…: content does not match its id")
        return data

    def chunk_sizes(self) -> dict[str, int]:
        """Every stored chunk id -> stored size."""
        return {info.key.rsplit("/", 1)[1]: info.size for info in self.storage.list("data/")}

    # -- manifests ----------------------------------------------------------------------------
    @staticmethod
    def manifest_key(database_id: str, backup_id: str) -> str:
        return check_key(f"backups/{database_id}/{backup_id}")

    def save_manifest(self, manifest: dict[str, Any]) -> str:
        """Write a manifest: the step that makes a backup visible."""
        key = self.manifest_key(manifest["database_id"], manifest["backup_id"])
        self.storage.put(key, self.cipher.seal(json.dumps(manifest).encode(), key, level=3))
        return key

    def load_manifest(self, database_id: str, backup_id: str) -> dict[str, Any]:
        key = self.manifest_key(database_id, backup_id)
        try:
            manifest: dict[str, Any] = json.loads(self.cipher.open(self.storage.get(key), key))
        except ObjectMissing:
            raise IntegrityError(f"manifest {key} is missing") from None
        except ValueError:
            raise IntegrityError(f"manifest {key} is not valid JSON") from None
        if manifest.get("backup_id") != backup_id or manifest.get("database_id") != database_id:
            raise IntegrityError(f"manifest {key} names another backup")
        return manifest

    def backup_ids(self, database_id: str | None = None) -> list[tuple[str, str]]:
        """(database id, backup id) of every visible backup, oldest first."""
        prefix = f"backups/{check_key(database_id)}/" if database_id else "backups/"
        found = []
        for info in self.storage.list(prefix):
            parts = info.key.split("/")
            if len(parts) == 3:
                found.append((parts[1], parts[2]))
        return sorted(found, key=lambda p: (p[1], p[0]))

    def delete_manifest(self, database_id: str, backup_id: str) -> None:
        self.storage.delete(self.manifest_key(database_id, backup_id))
