"""Keys and the object envelope: keyed chunk ids, zstd, AES-256-GCM bound to the object's name.

Envelope of every chunk and manifest (see docs/backup-repository.md)::

    b"DBF1" | flags (1 byte: 1 = zstd, 2 = AES-256-GCM, 4 = data-key epoch byte follows) | body
    body (encrypted)   = [epoch (1)] | nonce (12) | ciphertext | tag (16), AAD = header + object key
    body (unencrypted) = payload | sha256(payload) (32)

The key material a key slot wraps (the "master"): data key 0 (32) | chunk-id key (32) |
data key 1 (32) | ... ; new objects are sealed with the newest data key (``repo key rotate
--new-data-key`` appends one), older ones stay readable with theirs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engines.errors import IntegrityError

MAGIC = b"DBF1"
ZSTD = 1
AEAD = 2
EPOCH = 4
MASTER_LEN = 64  # 32 bytes AES key + 32 bytes chunk-id HMAC key
SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())


@dataclass(frozen=True)
class Cipher:
    """The repository's data keys; ``None`` keys mean an unencrypted repository."""

    master: bytes | None

    @property
    def encrypted(self) -> bool:
        return self.master is not None

    @property
    def epochs(self) -> int:
        """How many data keys the key material holds (1 before any data-key rotation)."""
        return 0 if self.master is None else 1 + (len(self.master) - MASTER_LEN) // 32

    def data_key(self, epoch: int) -> bytes:
        """The AES key of data-key ``epoch`` (0 is the repository's first)."""
        assert self.master is not None
        if epoch == 0:
            return self.master[:32]
        if not 0 < epoch < self.epochs:
            raise IntegrityError(f"data key {epoch} is not in this key slot (it holds {self.epochs}); "
                                 "open the repository with a key that was added after the rotation")
        start = MASTER_LEN + 32 * (epoch - 1)
        return self.master[start:start + 32]

    def auth_key(self) -> bytes:
        """The key that authenticates the config, key slots and index (fixed across data-key rotations)."""
        assert self.master is not None
        return hmac.new(self.master[32:64], b"dbfleet-auth-v2", hashlib.sha256).digest()

    def mac(self, data: bytes) -> str:
        """Hex HMAC-SHA256 of ``data`` under the auth key."""
        return hmac.new(self.auth_key(), data, hashlib.sha256).hexdigest()

    def rotated(self) -> Cipher:
        """The same key material plus one new data key, used for new objects from now on."""
        assert self.master is not None
        return Cipher(self.master + os.urandom(32))

    def chunk_id(self, data: bytes | memoryview) -> str:
        """HMAC-SHA256 of the plaintext under the id key (plain SHA-256 when unencrypted)."""
        if self.master is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.master[32:64], data, hashlib.sha256).hexdigest()

    def seal(self, payload: bytes, name: str, *, level: int | None) -> bytes:
        """Compress (when ``level``), then encrypt ``payload`` for object ``name``."""
        flags = 0
        if level is not None:
            compressed = zstandard.ZstdCompressor(level=level).compress(payload)
            if len(compressed) < len(payload):
                payload, flags = compressed, ZSTD
        if self.master is None:
            return MAGIC + bytes([flags]) + payload + hashlib.sha256(payload).digest()
        flags |= AEAD
        epoch = self.epochs - 1
        header = MAGIC + (bytes([flags | EPOCH, epoch]) if epoch else bytes([flags]))
        nonce = os.urandom(12)
        return header + nonce + AESGCM(self.data_key(epoch)).encrypt(nonce, payload, header + name.encode())

    def open(self, blob: bytes, name: str) -> bytes:
        """Authenticate, decrypt and decompress an object; any damage raises IntegrityError."""
        if len(blob) < 5 + (28 if self.encrypted else 32) or blob[:4] != MAGIC:
            raise IntegrityError(f"{name}: not a dbfleet object (bad header or truncated, {len(blob)} bytes)")
        flags = blob[4]
        if bool(flags & AEAD) != self.encrypted:
            raise IntegrityError(f"{name}: encryption flag does not match the repository")
        if self.master is None:
            payload, digest = blob[5:-32], blob[-32:]
            if hashlib.sha256(payload).digest() != digest:
                raise IntegrityError(f"{name}: checksum mismatch (corrupted or truncated)")
        else:
            head = 6 if flags & EPOCH else 5
            key = self.data_key(blob[5] if flags & EPOCH else 0)
            try:
                payload = AESGCM(key).decrypt(blob[head:head + 12], blob[head + 12:], blob[:head] + name.encode())
            except InvalidTag:
                raise IntegrityError(f"{name}: authentication failed (corrupted, truncated, "
                                     "moved or tampered with)") from None
        if flags & ZSTD:
            try:
                payload = zstandard.ZstdDecompressor().decompress(payload)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{name}: cannot decompress: {exc}") from None
        return payload


def derive(secret: str, salt: bytes, params: dict[str, int]) -> bytes:
    """A 32-byte wrapping key from the user's key or passphrase (scrypt)."""
    return hashlib.scrypt(secret.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"],
                          maxmem=256 * 1024 * 1024, dklen=32)


def wrap(master: bytes, secret: str, repo_id: str, key_id: str, label: str) -> dict[str, Any]:
    """A key slot: the data key encrypted under a key derived from ``secret``."""
    salt = os.urandom(16)
    nonce = os.urandom(12)
    kek = derive(secret, salt, SCRYPT)
    wrapped = AESGCM(kek).encrypt(nonce, master, f"dbfleet-key:{repo_id}:{key_id}".encode())
    return {"id": key_id, "label": label, "kdf": {"name": "scrypt", "salt": b64(salt), **SCRYPT},
            "nonce": b64(nonce), "wrapped": b64(wrapped)}


def unwrap(slot: dict[str, Any], secret: str, repo_id: str) -> bytes | None:
    """The data key if ``secret`` opens this slot, else None."""
    kdf = slot["kdf"]
    kek = derive(secret, unb64(kdf["salt"]), {k: int(kdf[k]) for k in ("n", "r", "p")})
    try:
        return AESGCM(kek).decrypt(unb64(slot["nonce"]), unb64(slot["wrapped"]),
                                   f"dbfleet-key:{repo_id}:{slot['id']}".encode())
    except InvalidTag:
        return None


def new_master() -> bytes:
    return os.urandom(MASTER_LEN)
