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


def _key_file(key_file: str) -> str:
    """A key file's content; refused when other users may read it or when it is empty."""
    path = Path(key_file).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError([("--new-key-file", f"cannot read {path}: {exc.strerror}")]) from None
    if mode & 0o077:
        raise ConfigError([("--new-key-file", f"{path} is readable by group or others (mode {mode & 0o777:o}); "
                            f"run `chmod 600 {path}` first")])
    return text


def _new_secret(key_file: str | None, key_env: str | None) -> tuple[str, str]:
    """The new wrapping key from a file, an env var, or a passphrase typed twice; and a label."""
    if key_file:
        secret, label, where = _key_file(key_file), f"file {key_file}", "--new-key-file"
    elif key_env:
        if key_env not in os.environ:
            raise ConfigError([("--new-key-env", f"environment variable {key_env} is not set")])
        secret, label, where = os.environ[key_env], f"env {key_env}", "--new-key-env"
    else:
        secret = click.prompt("new passphrase", hide_input=True, confirmation_prompt=True, default="",
                              show_default=False)
        label, where = "passphrase", "passphrase"
    if not secret.strip():
        raise ConfigError([(where, "the new key is empty; refusing (an empty key protects nothing)")])
    return secret, label


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
        ("stored", human_bytes(sum(chunks.values()))), ("key slots", len(opened.keys())),
        ("data keys", opened.cipher.epochs),
        ("unreadable key slots", "; ".join(opened.unreadable_slots) or "none")]))


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
@click.option("--new-data-key", is_flag=True,
              help="also start a new data key for new chunks (old chunks stay readable; see docs)")
def key_rotate(storage: str | None, new_key_file: str | None, new_key_env: str | None, new_data_key: bool) -> None:
    """Replace the configured key by a new one: add its slot, then drop the old key's slots."""
    from engines.backup.repository import Repository

    name, scfg, store = _target(storage)
    old = scfg.key_secret(name)
    opened = Repository.open(store, old)
    secret, label = _new_secret(new_key_file, new_key_env)
    mine = set(opened.slots_opened_by(old or ""))
    new_id = opened.rotate_data_key(secret, label) if new_data_key else opened.add_key(secret, label)
    for slot in sorted(mine):
        opened.remove_key(slot)
        console.print(f"removed key slot {slot}")
    others = [k["id"] for k in opened.keys() if k["id"] not in mine | {new_id}]
    if new_data_key:
        console.print(f"new data key {opened.cipher.epochs - 1}: new chunks and manifests are encrypted with it; "
                      "older ones keep theirs until prune drops them.")
        if others:
            console.print(f"[yellow]key slots {', '.join(others)} do not hold the new data key: they cannot read "
                          "new backups. Re-add those keys with `dbfleet repo key add`.[/yellow]")
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


@repo.command("upgrade")
@_storage
def repo_upgrade(storage: str | None) -> None:
    """Upgrade a format-1 repository to format 2 (authenticated config, key slots and index)."""
    from engines.backup.upgrade import upgrade

    name, scfg, store = _target(storage)
    done = upgrade(store, scfg.key_secret(name))
    console.print(f"repository format version {done['version']}" +
                  (f"; indexed {done['backups_indexed']} backups" if done["upgraded"] else " (already current)"))


@repo.command("unlock")
@_storage
@click.option("--all", "all_locks", is_flag=True, help="remove every lock, not only stale ones")
def repo_unlock(storage: str | None, all_locks: bool) -> None:
    """Remove stale locks (holder gone or silent for 30 min)."""
    from engines.backup.locks import remove_stale

    _name, _scfg, store = _target(storage)
    removed = remove_stale(store, all_locks=all_locks)
    console.print(f"removed {len(removed)} lock(s)" + "".join(f"\n  {k}" for k in removed))
