"""`dbfleet repo ...`: create a repository, inspect it, manage its key slots, clear stale locks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from engines.errors import ConfigError
from workers.render import console, key_value_table, rows_table

_storage = click.option("--storage", default=None, help="storage target (default: backup.storage)")


def _target(storage: str | None) -> tuple[str, Any, Any]:
    from engines.storage import open_storage
    from workers import runtime

    name, scfg = runtime.config().backup_storage(storage)
    return name, scfg, open_storage(name, scfg)


def _new_secret(key_file: str | None, key_env: str | None) -> tuple[str, str]:
    """The new wrapping key from a file, an env var, or a passphrase typed twice; and a label."""
    if key_file:
        return Path(key_file).expanduser().read_text().rstrip("\n"), f"file {key_file}"
    if key_env:
        if key_env not in os.environ:
            raise ConfigError([("--new-key-env", f"environment variable {key_env} is not set")])
        return os.environ[key_env], f"env {key_env}"
    return click.prompt("new passphrase", hide_input=True, confirmation_prompt=True), "passphrase"


@click.group("repo")
def repo() -> None:
    """The backup repository: init, info, keys, unlock."""


@repo.command("init")
@_storage
@click.option("--no-encryption", is_flag=True, help="store chunks in the clear (not recommended)")
def repo_init(storage: str | None, no_encryption: bool) -> None:
    """Create the repository of a storage target with its configured key."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    created = Repository.init(store, scfg.key_secret(name), encryption=not no_encryption)
    console.print(f"initialised repository {created.id} on {store.describe()} "
                  f"({created.config['encryption']})")


@repo.command("info")
@_storage
def repo_info(storage: str | None) -> None:
    """Format, encryption, key slots, backups and space."""
    from engines.backup.repository import Repository
    from workers.render import human_bytes

    name, scfg, store = _target(storage)
    opened = Repository.open(store, scfg.key_secret(name))
    chunks = opened.chunk_sizes()
    cfg = opened.config
    console.print(key_value_table(f"repository {opened.id}", [
        ("where", store.describe()), ("format", f"{cfg['format']} v{cfg['version']}"),
        ("encryption", cfg["encryption"]), ("chunk ids", cfg["chunk_id"]),
        ("chunker", f"{cfg['chunker']['algorithm']} avg {human_bytes(cfg['chunker']['avg_size'])}"),
        ("backups", len(opened.backup_ids())), ("chunks", len(chunks)),
        ("stored", human_bytes(sum(chunks.values()))), ("key slots", len(opened.keys()))]))


@repo.group("key")
def key() -> None:
    """Key slots: the data key wrapped by each of your keys. Changing them rewrites no data."""


@key.command("list")
@_storage
def key_list(storage: str | None) -> None:
    """Key slots (id, label, created)."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    opened = Repository.open(store, scfg.key_secret(name))
    mine = set(opened.slots_opened_by(scfg.key_secret(name) or ""))
    console.print(rows_table("key slots", ["id", "label", "created", "opened by configured key"],
                             [[k["id"], k["label"], k.get("created", ""), "yes" if k["id"] in mine else ""]
                              for k in opened.keys()]))


@key.command("add")
@_storage
@click.option("--new-key-file", default=None, help="file holding the new key")
@click.option("--new-key-env", default=None, help="env var holding the new key")
def key_add(storage: str | None, new_key_file: str | None, new_key_env: str | None) -> None:
    """Add a key slot: the new key opens the repository too."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    opened = Repository.open(store, scfg.key_secret(name))
    secret, label = _new_secret(new_key_file, new_key_env)
    console.print(f"added key slot {opened.add_key(secret, label)} ({label})")


@key.command("rotate")
@_storage
@click.option("--new-key-file", default=None, help="file holding the new key")
@click.option("--new-key-env", default=None, help="env var holding the new key")
def key_rotate(storage: str | None, new_key_file: str | None, new_key_env: str | None) -> None:
    """Replace the configured key by a new one: add its slot, then drop the old key's slots."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    old = scfg.key_secret(name)
    opened = Repository.open(store, old)
    secret, label = _new_secret(new_key_file, new_key_env)
    new_id = opened.add_key(secret, label)
    for slot in opened.slots_opened_by(old or ""):
        if slot != new_id:
            opened.remove_key(slot)
            console.print(f"removed key slot {slot}")
    console.print(f"added key slot {new_id} ({label}). Point storage.{name}.key_file/key_env at the new key "
                  "on every worker now: the old key no longer opens this repository.")


@key.command("remove")
@click.argument("key_id")
@_storage
def key_remove(key_id: str, storage: str | None) -> None:
    """Drop one key slot (never the last)."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    Repository.open(store, scfg.key_secret(name)).remove_key(key_id)
    console.print(f"removed key slot {key_id}")


@repo.command("unlock")
@_storage
@click.option("--all", "all_locks", is_flag=True, help="remove every lock, not only stale ones")
def repo_unlock(storage: str | None, all_locks: bool) -> None:
    """Remove stale locks (holder gone or silent for 30 min)."""
    from engines.backup.locks import remove_stale

    _name, _scfg, store = _target(storage)
    removed = remove_stale(store, all_locks=all_locks)
    console.print(f"removed {len(removed)} lock(s)" + "".join(f"\n  {k}" for k in removed))
