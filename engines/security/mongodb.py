"""MongoDB security checks (mongoaudit's core): authorization, exposure, TLS, server-side JavaScript, version.

Reads getCmdLineOpts (needs clusterMonitor or an admin role) and buildInfo. No MongoDB server runs on
the development machines: unit tests use a named fake client; tests/integration runs these against a
real server when DBFLEET_TEST_MONGODB_URL is set.
"""

from __future__ import annotations

from typing import Any

from engines.security.registry import CheckSet, Unknowable, Verdict, verdict
from engines.security.versions import check_version

CHECKS = CheckSet("mongodb")


class MongoProbe:
    def __init__(self, client: Any, options: dict[str, Any]) -> None:
        self.client, self.options = client, options
        self.version = str(client.admin.command("buildInfo").get("version"))
        self.error: str | None = None
        try:
            self.parsed: dict[str, Any] = client.admin.command("getCmdLineOpts").get("parsed", {})
        except Exception as exc:
            self.parsed, self.error = {}, f"getCmdLineOpts refused: {exc}"

    def option(self, *path: str) -> Any:
        """A startup option by path (``security``, ``authorization``); Unknowable when unreadable."""
        if self.error:
            raise Unknowable(self.error)
        node: Any = self.parsed
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node


@CHECKS.check("mongo.authorization", "Access control is enabled", "critical",
              "security.authorization: enabled in mongod.conf (create an admin user first), then restart")
def _auth(probe: MongoProbe) -> Verdict:
    value = probe.option("security", "authorization")
    keyfile = probe.option("security", "keyFile")
    return verdict(value == "enabled" or bool(keyfile), authorization=value or "disabled")


@CHECKS.check("mongo.bind_all", "mongod does not listen on every interface", "high",
              "net.bindIp: 127.0.0.1,<private address> in mongod.conf (remove bindIpAll), then restart")
def _bind(probe: MongoProbe) -> Verdict:
    bind_all = bool(probe.option("net", "bindIpAll"))
    bind_ip = str(probe.option("net", "bindIp") or "")
    open_ = bind_all or bool({"0.0.0.0", "::", "*"} & {a.strip() for a in bind_ip.split(",")})
    return verdict(not open_, bindIp=bind_ip or None, bindIpAll=bind_all)


@CHECKS.check("mongo.tls", "Connections require TLS", "high",
              "net.tls.mode: requireTLS with certificateKeyFile in mongod.conf, then restart")
def _tls(probe: MongoProbe) -> Verdict:
    mode = probe.option("net", "tls", "mode") or probe.option("net", "ssl", "mode") or "disabled"
    return verdict(mode == "requireTLS" or mode == "requireSSL", mode=mode)


@CHECKS.check("mongo.javascript", "Server-side JavaScript is disabled", "medium",
              "security.javascriptEnabled: false in mongod.conf, then restart")
def _js(probe: MongoProbe) -> Verdict:
    enabled = probe.option("security", "javascriptEnabled")
    return verdict(enabled is False, javascriptEnabled=True if enabled is None else enabled)


@CHECKS.check("mongo.version_current", "MongoDB is a supported release", "high",
              "upgrade to a supported MongoDB release")
def _version(probe: MongoProbe) -> Verdict:
    return check_version("mongodb", probe.version, 2)


def open_probe(connector: Any, options: dict[str, Any]) -> MongoProbe:
    return MongoProbe(connector.conn, options)
