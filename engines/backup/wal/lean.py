"""`dbfleet wal push|fetch` without the rest of dbfleet: PostgreSQL runs them once per WAL file.

``archive_command`` starts one process per 16 MiB segment, so start-up is most of a push: the
full CLI imports click, rich, pydantic (the whole config model), Celery's world. This path
imports only the repository, chunk pipeline, crypto and storage modules.

It still obeys the real config: the part a push needs (the database's kind, the storage target
with where its key lives, compression and encryption) is taken from the fully validated
:func:`engines.config.load_config` the first time and kept in a profile file keyed by the
config file's bytes and path, the working directory, the whole environment, the arguments and
the config code itself; any change to one of them validates again. The profile holds no secret
(key files and variables are named, never read into it) and is trusted only in a directory
and file owned by this user and closed to others (else it is not used).

Semantics are the CLI's: idempotent on retry, a different file under an archived name refused,
non-zero exit on any failure so PostgreSQL retries (fetch: 1 = not archived, 126 = damaged).

Push-ahead: when the archiver has a backlog (more ``pg_wal/archive_status/*.ready`` files than
the one asked for), a push goes on to push up to ``AHEAD_MAX`` of them with the repository it
already opened (the key derivation and imports paid once), each an ordinary idempotent push,
and records each in a ledger (size and sha256, written after the push). When PostgreSQL then asks
for one of them, the push finds its ledger entry, checks that the file still has that size and
sha256 and that its index object is in the repository, and returns without opening the
repository or importing the chunk pipeline. A crash anywhere leaves either no entry (the file is
pushed again: "already archived") or a true one; a changed file misses the ledger and meets the
ordinary refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

PROFILE_VERSION = 1
EXIT_MISSING = 1
EXIT_DAMAGED = 126
EXIT_USAGE = 2
# the storage settings a push reads (engines.storage): locations and names, never secret values
STORAGE_FIELDS = ("type", "path", "url", "endpoint_url", "key_file", "key_env")
STORAGE_EXTRA = ("region", "access_key_env", "secret_key_env", "max_connections")
VOLATILE_ENV = {"_", "OLDPWD", "SHLVL", "PWD"}
AHEAD_MAX = 8  # files pushed ahead of the archiver per process
LEDGER_MAX_AGE = 86400.0  # seconds an unused ledger entry is kept


class LeanStorageConfig:
    """What :func:`engines.storage.open_storage` reads of a StorageConfig."""

    def __init__(self, data: dict[str, Any]) -> None:
        for name in STORAGE_FIELDS:
            setattr(self, name, data.get(name))
        self.model_extra = dict(data.get("extra") or {})


def _cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(os.path.expanduser("~"), ".cache")
                                                 if os.path.expanduser("~") != "~" else None)
    if not base:
        return None
    path = Path(base) / "dbfleet"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not stat.S_ISDIR(st.st_mode):
        return None  # not ours alone: a profile there could have been planted
    return path


def _profile_key(database_id: str, storage: str | None) -> str:
    """Everything the profile is derived from, hashed."""
    h = hashlib.sha256(f"v{PROFILE_VERSION}\0{database_id}\0{storage or ''}\0{os.getcwd()}\0".encode())
    config = os.environ.get("DBFLEET_CONFIG") or ("dbfleet.yaml" if os.path.exists("dbfleet.yaml") else "")
    h.update(os.path.abspath(config).encode() + b"\0" if config else b"-\0")
    if config:
        try:
            h.update(Path(config).read_bytes())
        except OSError:
            h.update(b"unreadable")
    for name in sorted(set(os.environ) - VOLATILE_ENV):
        h.update(f"{name}={os.environ[name]}\0".encode(errors="surrogateescape"))
    code = Path(__file__).resolve().parents[2] / "config.py"  # engines/config.py: the validation itself
    try:
        st = code.stat()
        h.update(f"{st.st_mtime_ns}:{st.st_size}".encode())
    except OSError:
        pass
    return h.hexdigest()


def _read_profile(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            data: dict[str, Any] = json.loads(fh.read())
        return data if data.get("version") == PROFILE_VERSION else None
    except (OSError, ValueError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _write_profile(path: Path, profile: dict[str, Any]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".wal-profile-", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(profile, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next push validates the config again


def _validated_profile(database_id: str, storage: str | None) -> dict[str, Any]:
    """The slow path: the full config, validated, reduced to what push and fetch need."""
    from engines.config import load_config

    cfg = load_config(os.environ.get("DBFLEET_CONFIG") or None)
    db = cfg.database(database_id)
    profile: dict[str, Any] = {"version": PROFILE_VERSION, "database_id": db.id, "kind": db.kind}
    if db.kind != "postgresql":
        return profile
    name, scfg = cfg.backup_storage(storage)
    section = cfg.database_scripts.backup
    extra = scfg.model_extra or {}
    profile.update({
        "storage_name": name,
        "storage": {**{f: getattr(scfg, f) for f in STORAGE_FIELDS},
                    "extra": {k: extra[k] for k in STORAGE_EXTRA if k in extra}},
        "encryption": section.encryption,
        "level": section.compression_level if section.compression else None,
    })
    return profile


def profile(database_id: str, storage: str | None) -> dict[str, Any]:
    """The push profile of ``database_id``: cached when the config and environment are unchanged."""
    cache = _cache_dir()
    path = cache / f"wal-profile-{_profile_key(database_id, storage)[:40]}.json" if cache else None
    found = _read_profile(path) if path else None
    if found is not None:
        return found
    made = _validated_profile(database_id, storage)
    if path:
        _write_profile(path, made)
    return made


def _archive(prof: dict[str, Any], *, create: bool) -> Any:
    from engines.backup.repository import Repository
    from engines.backup.wal.archive import WalArchive
    from engines.secrets import resolve_secret
    from engines.storage import open_storage

    name = prof["storage_name"]
    cfg = LeanStorageConfig(prof["storage"])
    storage = open_storage(name, cfg)  # type: ignore[arg-type]  # duck-typed StorageConfig
    secret = resolve_secret(f"storage {name!r} key", env=cfg.key_env, file=cfg.key_file)  # type: ignore[attr-defined]
    if create:
        repo = Repository.open_or_init(storage, secret, encryption=prof["encryption"])
    else:
        repo = Repository.open(storage, secret, expect_encrypted=prof["encryption"])
    return WalArchive(repo, prof["database_id"])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _postgres(database_id: str, storage: str | None) -> dict[str, Any]:
    prof = profile(database_id, storage)
    if prof["kind"] != "postgresql":
        _error(f"{database_id} is a {prof['kind']} database; WAL archiving is for PostgreSQL", EXIT_USAGE)
    return prof


def _error(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _ledger(prof: dict[str, Any]) -> Path | None:
    """This database's and repository's push-ahead ledger directory (in the private cache directory)."""
    cache = _cache_dir()
    if cache is None:
        return None
    ident = json.dumps({k: prof.get(k) for k in ("database_id", "storage_name", "storage")}, sort_keys=True)
    path = cache / "wal-ahead" / hashlib.sha256(ident.encode()).hexdigest()[:32]
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _pushed_ahead(prof: dict[str, Any], ledger: Path, path: Path) -> bool:
    """True when ``path`` was pushed ahead with this exact content and its index object is in the repository."""
    from engines.backup.wal import names
    from engines.storage import check_key, open_storage

    name = names.check_name(path.name)
    entry = _read_profile(ledger / name)  # same ownership and mode checks as the profile
    if entry is None:
        return False
    (ledger / name).unlink(missing_ok=True)  # used once; a miss below pushes normally
    if (entry.get("size"), entry.get("sha256")) != _digest(path):
        return False
    storage = open_storage(prof["storage_name"], LeanStorageConfig(prof["storage"]))  # type: ignore[arg-type]
    return bool(storage.exists(check_key(f"wal/{prof['database_id']}/{name}")))


def _push_ahead(archive: Any, ledger: Path, path: Path, level: int | None) -> int:
    """Push up to AHEAD_MAX other files the archiver has marked ready; returns how many."""
    from engines.backup.wal import names

    status = path.parent / "archive_status"
    try:
        ready = sorted(p.name[:-len(".ready")] for p in status.iterdir() if p.name.endswith(".ready"))
    except OSError:
        return 0
    _prune_ledger(ledger)
    done = 0
    for name in ready:
        if done >= AHEAD_MAX:
            break
        if name == path.name or not names.ARCHIVABLE.match(name) or (ledger / name).exists():
            continue
        other = path.parent / name
        try:
            before = other.stat()
            size, digest = _digest(other)
            archive.push(other, level=level)
            after = other.stat()
        except Exception:  # noqa: BLE001 - gone, refused or failing: PostgreSQL's own call for it will say
            break
        if (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino):
            break  # changed while pushed (never for a .ready file): no ledger entry
        _write_profile(ledger / name, {"version": PROFILE_VERSION, "size": size, "sha256": digest})
        done += 1
    return done


def _prune_ledger(ledger: Path) -> None:
    import time

    cutoff = time.time() - LEDGER_MAX_AGE
    for entry in ledger.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass


def push(path: str, database_id: str, storage: str | None) -> None:
    prof = _postgres(database_id, storage)
    source = Path(path)
    ledger = _ledger(prof)
    if ledger is not None and _pushed_ahead(prof, ledger, source):
        print(f"wal push {source.name}: already archived (pushed ahead)", file=sys.stderr)
        return
    archive = _archive(prof, create=True)
    result = archive.push(source, level=prof["level"])
    ahead = _push_ahead(archive, ledger, source, prof["level"]) if ledger is not None else 0
    print(f"wal push {result.name}: {result.status} ({human_bytes(result.size)}, "
          f"stored {human_bytes(result.stored_bytes)})" + (f"; {ahead} more pushed ahead" if ahead else ""),
          file=sys.stderr)


def fetch(name: str, dest: str, database_id: str, storage: str | None) -> None:
    from engines.errors import DbfleetError, IntegrityError

    prof = _postgres(database_id, storage)
    try:
        found = _archive(prof, create=False).fetch(name, Path(dest))
    except ValueError as exc:  # not a WAL file name
        print(f"wal fetch: {exc}", file=sys.stderr)
        sys.exit(EXIT_MISSING)
    except DbfleetError as exc:  # damaged, unreadable storage, wrong key: never "end of archive"
        what = "damaged in the repository" if isinstance(exc, IntegrityError) else "cannot be read"
        _error(f"wal fetch {name}: {what}: {exc}; recovery stops here rather than ending early", EXIT_DAMAGED)
    if not found:
        print(f"wal fetch {name}: not archived", file=sys.stderr)
        sys.exit(EXIT_MISSING)


def parse(argv: list[str]) -> tuple[str, list[str], dict[str, str | None]] | None:
    """``[--config X] [--state-dir Y] wal push PATH --db ID [--storage S]`` (or ``wal fetch NAME DEST ...``)
    -> (command, positionals, options); None for anything else (the full CLI handles it, help included)."""
    options: dict[str, str | None] = {"config": None, "state-dir": None, "db": os.environ.get("DBFLEET_DB"),
                                      "storage": None}
    args = list(argv)

    def take(i: int, allowed: tuple[str, ...]) -> int | None:
        token = args[i]
        name, eq, value = token[2:].partition("=")
        if not token.startswith("--") or name not in allowed:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        options[name] = value
        return i + 1

    i = 0
    while i < len(args) and args[i].startswith("-"):
        nxt = take(i, ("config", "state-dir"))
        if nxt is None:
            return None
        i = nxt
    if args[i:i + 2] not in (["wal", "push"], ["wal", "fetch"]):
        return None
    command = args[i + 1]
    i += 2
    positionals: list[str] = []
    while i < len(args):
        if args[i] == "--":
            positionals += args[i + 1:]
            break
        if args[i].startswith("-") and args[i] != "-":
            nxt = take(i, ("db", "storage"))
            if nxt is None:
                return None
            i = nxt
        else:
            positionals.append(args[i])
            i += 1
    if len(positionals) != (1 if command == "push" else 2) or not options["db"]:
        return None
    if command == "push" and not os.path.isfile(positionals[0]):
        return None  # the CLI's own "does not exist" usage error
    return command, positionals, options


def run(parsed: tuple[str, list[str], dict[str, str | None]]) -> None:
    from engines.errors import DbfleetError

    command, positionals, options = parsed
    if options["config"]:
        os.environ["DBFLEET_CONFIG"] = str(Path(options["config"]).resolve())
    if options["state-dir"]:
        os.environ["DBFLEET_STATE_DIR"] = str(Path(options["state-dir"]).expanduser().resolve())
    database_id, storage = str(options["db"]), options["storage"]
    try:
        if command == "push":
            push(positionals[0], database_id, storage)
        else:
            fetch(positionals[0], positionals[1], database_id, storage)
    except DbfleetError as exc:
        _error(str(exc), EXIT_USAGE)
    except TimeoutError as exc:
        _error(str(exc), 3)
