"""Redis security checks: ACLs, network exposure, dangerous commands, TLS, persistence files, version.

Only read commands are sent: INFO, CONFIG GET, ACL GETUSER/LIST/CAT, COMMAND INFO.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from engines.security.registry import CheckSet, Unknowable, Verdict, failed, passed, verdict
from engines.security.versions import check_version

CHECKS = CheckSet("redis")
DANGEROUS = ("flushall", "flushdb", "config", "debug", "keys", "module", "shutdown")
OPEN_BINDS = {"*", "0.0.0.0", "::", "-::*", "::*"}


class RedisProbe:
    """What the Redis checks read."""

    def __init__(self, client: Any, host: str | None, options: dict[str, Any]) -> None:
        self.client, self.host, self.options = client, host, options
        self.info = client.info()
        self.version = str(self.info.get("redis_version"))
        self._cats: dict[str, set[str]] = {}

    def config(self, name: str) -> str | None:
        """A CONFIG GET value; None when this server has no such setting."""
        try:
            value = self.client.config_get(name)
        except Exception as exc:
            raise Unknowable(f"CONFIG GET {name} refused: {exc}") from None
        return value.get(name)

    def acl_user(self, name: str) -> dict[str, Any]:
        """ACL GETUSER as sent by the server (redis-py's parsed form loses the order of the rules)."""
        try:
            raw = self.client.execute_command("ACL", "GETUSER", name)
        except Exception as exc:
            raise Unknowable(f"ACL GETUSER {name} refused: {exc}") from None
        if raw is None:
            raise Unknowable(f"ACL user {name!r} does not exist")
        pairs = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
        return {_text(k): ([_text(v) for v in val] if isinstance(val, list) else _text(val))
                for k, val in pairs.items()}

    def category(self, name: str) -> set[str]:
        if name not in self._cats:
            self._cats[name] = {str(c).lower() for c in self.client.acl_cat(name)}
        return self._cats[name]

    def exists(self, command: str) -> bool:
        """True when ``command`` answers by its original name (not renamed or disabled)."""
        info = self.client.execute_command("COMMAND INFO", command)  # raw reply: [None] when absent
        return bool(info and info[0])


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _flags(acl: dict[str, Any]) -> set[str]:
    return {str(f) for f in acl.get("flags", [])}


def allowed(probe: RedisProbe, commands: str, command: str) -> bool:
    """Does an ACL command rule string (``+@all -keys ...``) allow ``command``? Later rules win."""
    ok = False
    for tok in commands.split():
        sign, name = tok[0], tok[1:].lower()
        if tok in ("allcommands", "nocommands"):
            ok = tok == "allcommands"
        elif sign in "+-" and (name == command or (name.startswith("@") and
                                                    (name == "@all" or command in probe.category(name[1:])))):
            ok = sign == "+"
    return ok


@CHECKS.check("redis.default_user_nopass", "The default user needs a password", "critical",
              "ACL SETUSER default on >'<strong password>' (or requirepass in redis.conf), then ACL SAVE")
def _nopass(probe: RedisProbe) -> Verdict:
    acl = probe.acl_user("default")
    flags = _flags(acl)
    return verdict(not ({"on", "nopass"} <= flags), default_user_flags=sorted(flags))


@CHECKS.check("redis.acl_nopass_users", "No other enabled ACL user is passwordless", "high",
              "ACL SETUSER <user> resetpass >'<password>'")
def _acl_nopass(probe: RedisProbe) -> Verdict:
    users = [u for u in probe.client.acl_users() if u != "default"]
    bad = sorted(u for u in users if {"on", "nopass"} <= _flags(probe.acl_user(u)))
    return verdict(not bad, users=bad)


@CHECKS.check("redis.protected_mode", "protected-mode is on", "high", "CONFIG SET protected-mode yes "
              "(and protected-mode yes in redis.conf)")
def _protected(probe: RedisProbe) -> Verdict:
    value = probe.config("protected-mode")
    return verdict(value == "yes", protected_mode=value)


@CHECKS.check("redis.bind_all", "Redis does not listen on every interface", "high",
              "bind 127.0.0.1 -::1 <private address> in redis.conf, then restart")
def _bind(probe: RedisProbe) -> Verdict:
    bind = probe.config("bind") or ""
    addresses = set(bind.split())
    return verdict(bool(addresses) and not addresses & OPEN_BINDS, bind=bind or "(all interfaces)")


@CHECKS.check("redis.dangerous_commands", "The default user cannot run FLUSHALL, CONFIG, DEBUG, KEYS, MODULE",
              "high", "ACL SETUSER default -@dangerous -keys (give admin commands to a separate admin user)")
def _dangerous(probe: RedisProbe) -> Verdict:
    acl = probe.acl_user("default")
    if "on" not in _flags(acl):
        return passed(default_user="off")
    rules = acl.get("commands") or ""
    reachable = [c for c in DANGEROUS if probe.exists(c) and allowed(probe, str(rules), c)]
    return verdict(not reachable, commands=[c.upper() for c in reachable], acl=str(rules))


@CHECKS.check("redis.rename_command", "Dangerous commands are renamed or disabled", "low",
              "rename-command FLUSHALL \"\" (and CONFIG, DEBUG, ...) in redis.conf, or deny them by ACL")
def _renamed(probe: RedisProbe) -> Verdict:
    present = [c.upper() for c in ("flushall", "flushdb", "config", "debug") if probe.exists(c)]
    return verdict(not present, available_by_original_name=present)


@CHECKS.check("redis.tls", "TLS is enabled", "medium", "tls-port 6380 with tls-cert-file, tls-key-file and "
              "tls-ca-cert-file in redis.conf (and port 0 to refuse plain text)")
def _tls(probe: RedisProbe) -> Verdict:
    port = probe.config("tls-port")
    if port is None:
        return failed(tls_port="not supported by this build")
    return verdict(port not in ("0", ""), tls_port=port)


@CHECKS.check("redis.debug_module_commands", "DEBUG and MODULE commands are switched off", "medium",
              "enable-debug-command no and enable-module-command no in redis.conf (Redis 7+)")
def _debug(probe: RedisProbe) -> Verdict:
    debug, module = probe.config("enable-debug-command"), probe.config("enable-module-command")
    if debug is None:
        return failed(enable_debug_command="not available before Redis 7: DEBUG and MODULE are always on")
    return verdict(debug != "yes" and module != "yes", enable_debug_command=debug, enable_module_command=module)


@CHECKS.check("redis.persistence_dir", "The data directory is not readable or writable by other users", "medium",
              "chmod 700 <dir> and chmod 600 <dir>/<dbfilename>")
def _persistence_dir(probe: RedisProbe) -> Verdict:
    directory = probe.config("dir")
    local = probe.host in (None, "127.0.0.1", "localhost", "::1")
    if not directory or not local or not os.path.isdir(directory):
        raise Unknowable(f"data directory {directory!r} is not visible from the auditing host")
    loose = []
    for path in (directory, os.path.join(directory, probe.config("dbfilename") or "dump.rdb")):
        if os.path.exists(path) and os.stat(path).st_mode & (stat.S_IROTH | stat.S_IWOTH):
            loose.append(f"{path} {stat.filemode(os.stat(path).st_mode)}")
    return verdict(not loose, dir=directory, world_accessible=loose)


@CHECKS.check("redis.version_current", "Redis is on the latest patch release of a supported version", "high",
              "upgrade Redis to the latest patch release")
def _version(probe: RedisProbe) -> Verdict:
    return check_version("redis", probe.version, 2)


def open_probe(connector: Any, options: dict[str, Any]) -> RedisProbe:
    """Use the connector's client (it pings on connect)."""
    return RedisProbe(connector.conn, connector.db.host, options)
