"""Keys and the object envelope: keyed chunk ids, zstd, AES-256-GCM bound to the object's name.

Envelope of every chunk and manifest (see docs/backup-repository.md)::

    b"DBF1" | flags (1 byte: 1 = zstd, 2 = AES-256-GCM) | body
    body (encrypted)   = nonce (12) | ciphertext | tag (16), AAD = b"DBF1" + flags + object key
    body (unencrypted) = payload | sha256(payload) (32)
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

    def chunk_id(self, data: bytes | memoryview) -> str:
        """HMAC-SHA256 of the plaintext under the id key (plain SHA-256 when unencrypted)."""
        if self.master is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.master[32:], data, hashlib.sha256).hexdigest()

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
        nonce = os.urandom(12)
        aad = MAGIC + bytes([flags]) + name.encode()
        return MAGIC + bytes([flags]) + nonce + AESGCM(self.master[:32]).encrypt(nonce, payload, aad)

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
            try:
                payload = AESGCM(self.master[:32]).decrypt(blob[5:17], blob[17:], blob[:5] + name.encode())
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
