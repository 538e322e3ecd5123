"""Elasticsearch security checks: security features, anonymous access, exposure, HTTP TLS, version.

No Elasticsearch server runs on the development machines: unit tests use a named fake client;
tests/integration runs these against a real server when DBFLEET_TEST_ELASTICSEARCH_URL is set.
"""

from __future__ import annotations

from typing import Any

from engines.security.registry import CheckSet, Unknowable, Verdict, failed, verdict
from engines.security.versions import check_version

CHECKS = CheckSet("elasticsearch")


class EsProbe:
    def __init__(self, client: Any, options: dict[str, Any]) -> None:
        self.client, self.options = client, options
        self.version = str(client.info()["version"]["number"])
        self._settings: list[dict[str, Any]] | None = None

    def security_enabled(self) -> bool:
        features = self.client.xpack.info().get("features", {})
        return bool(features.get("security", {}).get("enabled"))

    def node_settings(self) -> list[dict[str, Any]]:
        """Every node's settings (flat keys), from the nodes info API."""
        if self._settings is None:
            try:
                nodes = self.client.nodes.info(metric="settings", flat_settings=True).get("nodes", {})
            except Exception as exc:
                raise Unknowable(f"nodes info refused: {exc}") from None
            self._settings = [n.get("settings", {}) for n in nodes.values()]
        return self._settings


@CHECKS.check("es.security_enabled", "Security (authentication) is enabled", "critical",
              "xpack.security.enabled: true in elasticsearch.yml and set passwords "
              "(elasticsearch-reset-password), then restart")
def _security(probe: EsProbe) -> Verdict:
    enabled = probe.security_enabled()
    return verdict(enabled, security_enabled=enabled)


@CHECKS.check("es.anonymous_access", "Anonymous requests are not granted a role", "high",
              "remove xpack.security.authc.anonymous.roles from elasticsearch.yml")
def _anonymous(probe: EsProbe) -> Verdict:
    if not probe.security_enabled():
        return failed(reason="security disabled: every request is anonymous and unrestricted")
    roles = [s.get("xpack.security.authc.anonymous.roles") for s in probe.node_settings()]
    roles = [r for r in roles if r]
    return verdict(not roles, anonymous_roles=roles)


@CHECKS.check("es.bind_all", "Nodes do not publish HTTP on every interface", "high",
              "network.host: <private address> (not 0.0.0.0) in elasticsearch.yml")
def _bind(probe: EsProbe) -> Verdict:
    hosts = [s.get("network.host") or s.get("http.host") for s in probe.node_settings()]
    bad = [h for h in hosts if h and str(h) in ("0.0.0.0", "::", "_global_", "[0.0.0.0]")]
    return verdict(not bad, network_hosts=hosts)


@CHECKS.check("es.tls_http", "The HTTP layer uses TLS", "high",
              "xpack.security.http.ssl.enabled: true with a keystore in elasticsearch.yml")
def _tls(probe: EsProbe) -> Verdict:
    values = [str(s.get("xpack.security.http.ssl.enabled", "false")).lower() for s in probe.node_settings()]
    return verdict(bool(values) and all(v == "true" for v in values), http_ssl_enabled=values)


@CHECKS.check("es.version_current", "Elasticsearch is a supported release", "high",
              "upgrade to a supported Elasticsearch release")
def _version(probe: EsProbe) -> Verdict:
    return check_version("elasticsearch", probe.version, 2)


def open_probe(connector: Any, options: dict[str, Any]) -> EsProbe:
    return EsProbe(connector.conn, options)
