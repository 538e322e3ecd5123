"""The repository: config, key slots, chunks, manifests and the backup index on a Storage.

Layout and format: docs/backup-repository.md. Version 2 authenticates the config, every key slot
and the index of backups with a key derived from the repository's key material, so someone who
can write to the storage but holds no key cannot turn encryption off, relabel a key slot, or make
a backup disappear unnoticed.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any

from engines.backup import crypto
from engines.errors import IntegrityError, ObjectMissing, RepositoryError, WrongKeyError
from engines.storage import Storage, check_key

log = logging.getLogger("dbfleet.backup")

FORMAT = "dbfleet-repository"
VERSION = 2
CHUNKER = {"algorithm": "fastcdc2020", "avg_size": 1 << 20, "min_size": 256 << 10, "max_size": 4 << 20,
           "normalized_chunking": 1, "seed": 0}
# prefixes whose objects mean "a repository lives here" (a location holding any is never re-initialised)
OBJECT_PREFIXES = ("keys/", "backups/", "index/", "data/", "wal/")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,99}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_backup_id(now: datetime | None = None) -> str:
    """Time-sortable to the millisecond and unique: ``20261124T101500123Z-1a2b3c``."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: sorted-key compact JSON without the ``mac`` field."""
    return json.dumps({k: v for k, v in obj.items() if k != "mac"}, sort_keys=True, separators=(",", ":")).encode()


def check_stream_name(name: Any) -> str:
    """A manifest stream name is one path component of safe characters (it names a spool file)."""
    if not isinstance(name, str) or not _STREAM_NAME.match(name) or name in (".", ".."):
        raise IntegrityError(f"refusing stream name {name!r}: only letters, digits and '_.=-' "
                             "(no '/', no leading '.') are allowed")
    return name


class Repository:
    """One repository. Open it with :meth:`open` (or create it with :meth:`init`)."""

    def __init__(self, storage: Storage, config: dict[str, Any], cipher: crypto.Cipher) -> None:
        self.storage = storage
        self.config = config
        self.cipher = cipher
        self.id: str = config["id"]
        self.unreadable_slots: list[str] = []  # "keys/<id>: why", filled by open()

    # -- life cycle ------------------------------------------------------------------------
    @classmethod
    def init(cls, storage: Storage, secret: str | None, *, encryption: bool = True,
             label: str = "initial") -> Repository:
        """Create a repository; refuses when one exists (or its objects do). Encryption needs ``secret``."""
        if encryption and not secret:
            raise RepositoryError(f"{storage.describe()}: an encrypted repository needs a key "
                                  "(set key_file or key_env on the storage target, or encryption: false)")
        storage.prepare()
        if storage.exists("config"):
            raise RepositoryError(f"{storage.describe()}: a repository already exists here")
        cls._refuse_orphan_objects(storage)
        config: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "id": uuid.uuid4().hex, "created": utcnow().isoformat(),
            "chunker": CHUNKER, "encryption": "aes-256-gcm" if encryption else "none",
            "chunk_id": "hmac-sha256" if encryption else "sha256", "compression": "zstd"}
        cipher = crypto.Cipher(crypto.new_master() if encryption else None)
        if cipher.encrypted:
            config["mac"] = cipher.mac(canonical(config))
        if not storage.put_new("config", json.dumps(config, indent=1).encode()):
            raise RepositoryError(f"{storage.describe()}: a repository already exists here")
        repo = cls(storage, config, cipher)
        if cipher.master is not None and secret is not None:
            repo._write_slot(cipher.master, secret, label)
        log.info("initialised repository %s on %s", repo.id, storage.describe())
        return repo

    @staticmethod
    def _refuse_orphan_objects(storage: Storage) -> None:
        for prefix in OBJECT_PREFIXES:
            found = next(iter(storage.list(prefix)), None)
            if found is not None:
                raise RepositoryError(
                    f"{storage.describe()}: holds repository objects ({found.key}) but no config: the config "
                    "was deleted or lost. Refusing to create a new repository over it (its backups would "
                    "become unreadable); restore the config file from a copy, or point the storage "
                    "target at an empty location")

    @classmethod
    def _read_config(cls, storage: Storage) -> dict[str, Any]:
        try:
            config: dict[str, Any] = json.loads(storage.get("config"))
        except ObjectMissing:
            cls._refuse_orphan_objects(storage)
            raise RepositoryError(f"{storage.describe()}: no repository here "
                                  "(run `dbfleet repo init` or take a backup to create one)") from None
        except ValueError:
            raise IntegrityError(f"{storage.describe()}: the repository config is not JSON") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise RepositoryError(f"{storage.describe()}: not a dbfleet repository config")
        if config.get("version") == 1:
            raise RepositoryError(f"{storage.describe()}: repository format version 1 does not authenticate "
                                  "its config; run `dbfleet repo upgrade` (with the repository key) once")
        if config.get("version") != VERSION:
            raise RepositoryError(f"{storage.describe()}: unknown repository format version "
                                  f"{config.get('version')!r} (this dbfleet reads version {VERSION})")
        return config

    @classmethod
    def open(cls, storage: Storage, secret: str | None, *, expect_encrypted: bool = False) -> Repository:
        """Open an existing repository with the user's key; its config must verify under that key."""
        config = cls._read_config(storage)
        return cls._open_config(storage, config, secret, expect_encrypted=expect_encrypted)

    @classmethod
    def _open_config(cls, storage: Storage, config: dict[str, Any], secret: str | None, *,
                     expect_encrypted: bool, check_mac: bool = True) -> Repository:
        if config.get("encryption") == "none":
            cls._refuse_plain(storage, secret, expect_encrypted)
            return cls(storage, config, crypto.Cipher(None))
        if not secret:
            raise WrongKeyError(f"{storage.describe()}: the repository is encrypted; no key was given "
                                "(key_file or key_env on the storage target)")
        repo = cls(storage, config, crypto.Cipher(None))
        best: bytes | None = None
        for key, slot, error in repo._slots():
            master = None if slot is None else repo._unwrap(slot, secret)
            if slot is None or isinstance(master, str):
                repo.unreadable_slots.append(f"{key}: {master if isinstance(master, str) else error}")
            elif master is not None and (best is None or len(master) > len(best)):
                best = master
        for problem in repo.unreadable_slots:
            log.warning("%s: skipping unreadable key slot %s", storage.describe(), problem)
        if best is None:
            skipped = f"; {len(repo.unreadable_slots)} unreadable slot(s) skipped: " + "; ".join(
                repo.unreadable_slots) if repo.unreadable_slots else ""
            raise WrongKeyError(f"{storage.describe()}: wrong key: it opens none of the repository's key slots"
                                + skipped)
        repo.cipher = crypto.Cipher(best)
        if check_mac and not hmac.compare_digest(str(config.get("mac", "")), repo.cipher.mac(canonical(config))):
            raise IntegrityError(f"{storage.describe()}: the repository config does not verify under the "
                                 "repository key (it was modified without the key); refusing to use it. "
                                 "Restore the config object from a copy")
        return repo

    @staticmethod
    def _refuse_plain(storage: Storage, secret: str | None, expect_encrypted: bool) -> None:
        """An unencrypted config is believed only where nothing says the repository is encrypted."""
        slots = next(iter(storage.list("keys/")), None)
        if secret or expect_encrypted or slots is not None:
            why = ("it holds key slots" if slots is not None else
                   "a repository key is configured" if secret else "backup.encryption is on")
            raise IntegrityError(f"{storage.describe()}: the repository config says \"encryption\": \"none\" "
                                 f"but {why}: the config was probably replaced. Refusing to store or read "
                                 "plaintext; restore the config object from a copy")

    @classmethod
    def open_or_init(cls, storage: Storage, secret: str | None, *, encryption: bool = True) -> Repository:
        """Open the repository, creating it on first use (never over another repository's objects)."""
        if not storage.exists("config"):
            try:
                return cls.init(storage, secret, encryption=encryption)
            except RepositoryError:
                if not storage.exists("config"):
                    raise  # lost a creation race only if the config now exists
        return cls.open(storage, secret, expect_encrypted=encryption)

    # -- key slots ----------------------------------------------------------------------------
    def _slots(self) -> list[tuple[str, dict[str, Any] | None, str | None]]:
        """(key, slot or None, why unreadable) for every object under keys/."""
        out: list[tuple[str, dict[str, Any] | None, str | None]] = []
        for info in self.storage.list("keys/"):
            try:
                slot = json.loads(self.storage.get(info.key))
                if not isinstance(slot, dict) or not isinstance(slot.get("kdf"), dict) or "id" not in slot:
                    raise ValueError("not a key slot")
                out.append((info.key, slot, None))
            except ObjectMissing:
                continue
            except (ValueError, UnicodeDecodeError) as exc:
                out.append((info.key, None, f"unreadable ({exc.__class__.__name__}: {str(exc)[:80]})"))
        return sorted(out, key=lambda t: t[0])

    def _unwrap(self, slot: dict[str, Any], secret: str) -> bytes | str | None:
        """The key material, None when ``secret`` does not open the slot, or why the slot is damaged."""
        try:
            master = crypto.unwrap(slot, secret, self.id)
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            return f"damaged ({exc.__class__.__name__})"
        if master is None:
            return None
        if not hmac.compare_digest(str(slot.get("mac", "")), crypto.Cipher(master).mac(b"slot:" + canonical(slot))):
            return "its label or parameters were modified without the key (MAC mismatch)"
        return master

    def _write_slot(self, master: bytes, secret: str, label: str) -> str:
        if not secret:
            raise RepositoryError("refusing an empty key or passphrase")
        key_id = secrets.token_hex(4)
        slot = crypto.wrap(master, secret, self.id, key_id, label) | {"created": utcnow().isoformat()}
        slot["mac"] = crypto.Cipher(master).mac(b"slot:" + canonical(slot))
        if not self.storage.put_new(f"keys/{key_id}", json.dumps(slot, indent=1).encode()):
            raise RepositoryError(f"key slot {key_id} exists already; retry")
        return key_id

    def keys(self) -> list[dict[str, Any]]:
        """The readable key slots (id, label, created); never the wrapped material."""
        return [{k: s[k] for k in ("id", "label", "created") if k in s} for _key, s, _e in self._slots() if s]

    def add_key(self, new_secret: str, label: str) -> str:
        """Wrap the key material under one more key; no data is rewritten."""
        if self.cipher.master is None:
            raise RepositoryError("the repository is not encrypted; it has no keys")
        return self._write_slot(self.cipher.master, new_secret, label)

    def rotate_data_key(self, new_secret: str, label: str) -> str:
        """Add a data key for new objects, wrapped (with the old ones) under ``new_secret`` only."""
        if self.cipher.master is None:
            raise RepositoryError("the repository is not encrypted; it has no keys")
        rotated = self.cipher.rotated()
        key_id = self._write_slot(rotated.master or b"", new_secret, label)
        self.cipher = rotated
        return key_id

    def remove_key(self, key_id: str) -> None:
        """Drop a key slot; refuses to drop the last one."""
        ids = [s["id"] for _k, s, _e in self._slots() if s]
        if key_id not in ids:
            raise RepositoryError(f"no key slot {key_id!r} (slots: {', '.join(ids)})")
        if len(ids) == 1:
            raise RepositoryError("refusing to remove the last key slot: the repository would be unreadable")
        self.storage.delete(f"keys/{key_id}")

    def slots_opened_by(self, secret: str) -> list[str]:
        """The ids of the slots that ``secret`` opens."""
        return [s["id"] for _k, s, _e in self._slots() if s and isinstance(self._unwrap(s, secret), bytes)]

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

    # -- manifests and the index --------------------------------------------------------------
    @staticmethod
    def manifest_key(database_id: str, backup_id: str) -> str:
        return check_key(f"backups/{database_id}/{backup_id}")

    @staticmethod
    def index_key(database_id: str, backup_id: str, *, forgotten: bool = False) -> str:
        return check_key(f"{'forgotten' if forgotten else 'index'}/{database_id}/{backup_id}")

    def save_manifest(self, manifest: dict[str, Any]) -> str:
        """Write a manifest, then its authenticated index entry: the step that makes a backup visible."""
        for stream in manifest.get("streams", []):
            check_stream_name(stream.get("name"))
        key = self.manifest_key(manifest["database_id"], manifest["backup_id"])
        body = json.dumps(manifest).encode()
        self.storage.put(key, self.cipher.seal(body, key, level=3))
        entry = {"database_id": manifest["database_id"], "backup_id": manifest["backup_id"],
                 "manifest_sha256": hashlib.sha256(body).hexdigest(), "finished_at": manifest.get("finished_at")}
        index = self.index_key(manifest["database_id"], manifest["backup_id"])
        self.storage.put(index, self.cipher.seal(json.dumps(entry).encode(), index, level=None))
        return key

    def load_index_entry(self, database_id: str, backup_id: str) -> dict[str, Any]:
        key = self.index_key(database_id, backup_id)
        try:
            entry: dict[str, Any] = json.loads(self.cipher.open(self.storage.get(key), key))
        except ObjectMissing:
            raise IntegrityError(f"index entry {key} is missing") from None
        except ValueError:
            raise IntegrityError(f"index entry {key} is not valid JSON") from None
        return entry

    def load_manifest(self, database_id: str, backup_id: str) -> dict[str, Any]:
        """A manifest, checked against its index entry and with safe stream names."""
        key = self.manifest_key(database_id, backup_id)
        try:
            body = self.cipher.open(self.storage.get(key), key)
            manifest: dict[str, Any] = json.loads(body)
        except ObjectMissing:
            raise IntegrityError(f"manifest {key} is missing (the index lists this backup)") from None
        except ValueError:
            raise IntegrityError(f"manifest {key} is not valid JSON") from None
        if manifest.get("backup_id") != backup_id or manifest.get("database_id") != database_id:
            raise IntegrityError(f"manifest {key} names another backup")
        entry = self.load_index_entry(database_id, backup_id)
        if entry.get("manifest_sha256") != hashlib.sha256(body).hexdigest():
            raise IntegrityError(f"manifest {key} does not match its index entry")
        for stream in manifest.get("streams", []):
            check_stream_name(stream.get("name"))
        return manifest

    def _listed(self, prefix: str, database_id: str | None) -> set[tuple[str, str]]:
        where = f"{prefix}/{check_key(database_id)}/" if database_id else f"{prefix}/"
        return {(p[1], p[2]) for p in (i.key.split("/") for i in self.storage.list(where)) if len(p) == 3}

    def backup_ids(self, database_id: str | None = None) -> list[tuple[str, str]]:
        """(database id, backup id) of every backup the index lists and prune has not forgotten, oldest
        first. A listed backup whose manifest is gone stays listed: loading it raises."""
        found = self._listed("index", database_id) - self._listed("forgotten", database_id)
        return sorted(found, key=lambda p: (p[1], p[0]))

    def orphan_manifests(self, database_id: str | None = None) -> list[tuple[str, str]]:
        """Manifests the index does not list (a backup killed while finishing, or an index entry deleted)."""
        listed = self._listed("index", database_id)
        return sorted(self._listed("backups", database_id) - listed, key=lambda p: (p[1], p[0]))

    def delete_manifest(self, database_id: str, backup_id: str) -> None:
        """Forget a backup: an authenticated tombstone first, then the manifest (the index is append-only)."""
        key = self.index_key(database_id, backup_id, forgotten=True)
        self.storage.put(key, self.cipher.seal(json.dumps({"forgotten": backup_id}).encode(), key, level=None))
        self.storage.delete(self.manifest_key(database_id, backup_id))
