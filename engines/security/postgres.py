"""PostgreSQL security checks over a normal connection (no shell on the server): roles, pg_hba, objects.

Setting-only checks are declared in :mod:`engines.security.postgres_settings`. Everything here
reads catalogs; the session is read-only, so no check can write. Checks that look at objects
(functions, extensions, tables) look at the registered database, not every database of the cluster.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from engines.security import postgres_settings
from engines.security.registry import CheckSet, Verdict, failed, passed, verdict
from engines.security.versions import check_version

CHECKS = CheckSet("postgresql")
postgres_settings.register(CHECKS)

RISKY_EXTENSIONS = ("adminpack", "dblink", "file_fdw", "plperlu", "plpython3u", "plpythonu", "pltclu")
RISKY_FUNCTIONS = ("pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import",
                   "lo_export", "pg_file_write", "pg_file_unlink", "pg_file_rename", "dblink_connect_u",
                   "pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_ls_logdir", "pg_ls_waldir")
SERVER_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
PII_COLUMN = re.compile(r"e_?mail|phone|mobile|ssn|social_security|birth|dob|passport|credit_?card|card_?number"
                        r"|iban|national_id|tax_id|street|address|postcode|zip_?code", re.I)
HOST_TYPES = ("host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc")


class PgProbe:
    """What the PostgreSQL checks read, fetched once per audit."""

    def __init__(self, conn: Any, options: dict[str, Any]) -> None:
        self.conn = conn
        self.options = options
        self.user, self.superuser, self.version, self.version_num = conn.execute(
            "SELECT current_user, rolsuper, current_setting('server_version'),"
            " current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user").fetchone()
        self.settings = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
        self._hba: list[dict[str, Any]] | None = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query; privilege errors reach the engine, which reports ``unknown``."""
        return list(self.conn.execute(sql, params or None).fetchall())

    def setting(self, name: str) -> str:
        return postgres_settings.require_setting(self.settings, name, self.user)

    def hba(self) -> list[dict[str, Any]]:
        """pg_hba.conf as the server parsed it (superuser-only unless granted)."""
        if self._hba is None:
            cur = self.conn.execute(
                "SELECT line_number, type, database, user_name, address, netmask, auth_method, error"
                " FROM pg_hba_file_rules ORDER BY line_number")
            names = [d.name for d in cur.description]
            self._hba = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return self._hba

    def superusers(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT rolname FROM pg_roles WHERE rolsuper")}


def _line(rule: dict[str, Any]) -> str:
    where = rule["address"] or ""
    if rule["netmask"]:
        where = f"{where}/{rule['netmask']}"
    users, dbs = ",".join(rule["user_name"] or []), ",".join(rule["database"] or [])
    return f"line {rule['line_number']}: {rule['type']} {dbs} {users} {where} {rule['auth_method']}".replace("  ", " ")


def _is_loopback(rule: dict[str, Any]) -> bool:
    address = rule["address"]
    if rule["type"] == "local" or address in ("samehost", "localhost"):
        return True
    try:
        return bool(address) and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_open(rule: dict[str, Any]) -> bool:
    if rule["type"] not in HOST_TYPES:
        return False
    if rule["address"] == "all":
        return True
    return rule["address"] in ("0.0.0.0", "::") and rule["netmask"] in ("0.0.0.0", "::")


def _hba_lines(probe: PgProbe, match: Any) -> list[str]:
    return [_line(r) for r in probe.hba() if not r["error"] and match(r)]


def _hba_check(match: Any, fix: str) -> Any:
    def run(probe: PgProbe) -> Verdict:
        bad = _hba_lines(probe, match)
        return verdict(not bad, fix if bad else None, lines=bad)
    return run


CHECKS.check("pg.hba_trust_host", "No pg_hba.conf host line authenticates with trust", "critical",
             "replace 'trust' with 'scram-sha-256' on these lines, then SELECT pg_reload_conf();", "5.2")(
    _hba_check(lambda r: r["type"] in HOST_TYPES and r["auth_method"] == "trust", ""))
CHECKS.check("pg.hba_trust_local", "Local socket logins do not use trust", "medium",
             "use 'peer' or 'scram-sha-256' for local lines, then SELECT pg_reload_conf();", "5.1")(
    _hba_check(lambda r: r["type"] == "local" and r["auth_method"] == "trust", ""))
CHECKS.check("pg.hba_password", "No pg_hba.conf line sends passwords in clear text", "high",
             "replace 'password' with 'scram-sha-256', then SELECT pg_reload_conf();", "5.2")(
    _hba_check(lambda r: r["auth_method"] == "password", ""))
CHECKS.check("pg.hba_md5", "pg_hba.conf uses scram-sha-256 rather than md5", "medium",
             "set password_encryption = 'scram-sha-256', reset the passwords, then use 'scram-sha-256'", "5.9")(
    _hba_check(lambda r: r["auth_method"] == "md5", ""))
CHECKS.check("pg.hba_open_range", "No pg_hba.conf line admits every address (0.0.0.0/0, ::/0, all)", "high",
             "narrow the address to the networks your clients use", "5.6")(
    _hba_check(lambda r: _is_open(r) and r["auth_method"] != "reject", ""))
CHECKS.check("pg.hba_remote_without_tls", "Remote host lines require TLS (hostssl)", "medium",
             "use 'hostssl' instead of 'host'/'hostnossl' for addresses other than loopback", "6.8")(
    _hba_check(lambda r: r["type"] in ("host", "hostnossl") and not _is_loopback(r)
               and r["auth_method"] != "reject", ""))


@CHECKS.check("pg.hba_errors", "pg_hba.conf has no lines the server rejected", "medium",
              "fix the lines named in the evidence; the server ignores them until then")
def _hba_errors(probe: PgProbe) -> Verdict:
    bad = [f"line {r['line_number']}: {r['error']}" for r in probe.hba() if r["error"]]
    return verdict(not bad, lines=bad)


@CHECKS.check("pg.hba_remote_superuser", "Superusers cannot log in from remote hosts", "high",
              "add 'host all postgres 0.0.0.0/0 reject' (and ::/0) before the other host lines, "
              "or name the non-superuser roles explicitly", "5.8")
def _remote_superuser(probe: PgProbe) -> Verdict:
    supers = probe.superusers()
    bad = _hba_lines(probe, lambda r: r["type"] in HOST_TYPES and not _is_loopback(r)
                     and r["auth_method"] != "reject"
                     and bool({"all", *supers} & set(r["user_name"] or [])))
    return verdict(not bad, superusers=sorted(supers), lines=bad)


@CHECKS.check("pg.version_current", "PostgreSQL is on the latest minor of a supported major", "high",
              "upgrade to the latest minor release of this major", "1.4")
def _version(probe: PgProbe) -> Verdict:
    num = probe.version_num
    return check_version("postgresql", f"{num // 10000}.{num % 100}", 1)


@CHECKS.check("pg.superusers", "No superuser roles beyond the expected ones", "high",
              "ALTER ROLE <name> NOSUPERUSER; (give it the predefined roles it needs instead)", "4.2")
def _superusers(probe: PgProbe) -> Verdict:
    expected = set(probe.options.get("expected_superusers", ["postgres"]))
    extra = sorted(probe.superusers() - expected)
    return verdict(not extra, extra_superusers=extra, expected=sorted(expected))


def _attribute_check(column: str, option: str) -> Any:
    def run(probe: PgProbe) -> Verdict:
        allowed = set(probe.options.get(option, []))
        rows = probe.rows("SELECT rolname, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles"
                          " WHERE NOT rolsuper AND rolname !~ '^pg_'")
        index = ("rolcreaterole", "rolcreatedb", "rolbypassrls", "rolreplication").index(column) + 1
        roles = {r[0] for r in rows if r[index]}
        extra = sorted(roles - allowed)
        return verdict(not extra, roles=extra, allowed=sorted(allowed))
    return run


for _col, _attr, _sev in (("rolcreaterole", "CREATEROLE", "high"), ("rolcreatedb", "CREATEDB", "low"),
                          ("rolbypassrls", "BYPASSRLS", "high"), ("rolreplication", "REPLICATION", "medium")):
    CHECKS.check(f"pg.role_{_attr.lower()}", f"Only expected roles have {_attr}", _sev,
                 f"ALTER ROLE <name> NO{_attr}; (allow a role with security_audit option "
                 f"allowed_{_attr.lower()})", "4.2" if _attr != "REPLICATION" else "7.1")(
        _attribute_check(_col, f"allowed_{_attr.lower()}"))


@CHECKS.check("pg.role_connection_limit", "Login roles have a connection limit", "low",
              "ALTER ROLE <name> CONNECTION LIMIT <n>;", None)
def _connlimit(probe: PgProbe) -> Verdict:
    roles = [r[0] for r in probe.rows("SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper"
                                      " AND rolconnlimit = -1 ORDER BY 1")]
    return verdict(not roles, roles=roles)


@CHECKS.check("pg.login_without_password", "Every login role has a password", "high",
              "ALTER ROLE <name> PASSWORD '<strong password>'; or NOLOGIN", "5.3")
def _no_password(probe: PgProbe) -> Verdict:
    allowed = set(probe.options.get("allowed_passwordless", []))
    roles = [r[0] for r in probe.rows("SELECT rolname FROM pg_authid WHERE rolcanlogin"
                                      " AND rolpassword IS NULL ORDER BY 1") if r[0] not in allowed]
    return verdict(not roles, roles=roles)


@CHECKS.check("pg.md5_passwords", "No role's password is stored as an MD5 hash", "medium",
              "SET password_encryption = 'scram-sha-256'; then ALTER ROLE <name> PASSWORD '...';", "5.9")
def _md5(probe: PgProbe) -> Verdict:
    roles = [r[0] for r in probe.rows("SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%%' ORDER BY 1")]
    return verdict(not roles, roles=roles)


@CHECKS.check("pg.server_file_roles", "No ordinary role can read, write or execute files on the server", "high",
              "REVOKE pg_read_server_files, pg_write_server_files, pg_execute_server_program FROM <role>;", "4.7")
def _server_file_roles(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member"
                      " JOIN pg_roles g ON g.oid = a.roleid WHERE g.rolname = ANY(%s) AND NOT m.rolsuper"
                      " ORDER BY 1, 2", (list(SERVER_FILE_ROLES),))
    return verdict(not rows, grants=[f"{m} in {g}" for m, g in rows])


@CHECKS.check("pg.pgaudit", "pgAudit is loaded and installed", "medium",
              "add pgaudit to shared_preload_libraries, restart, CREATE EXTENSION pgaudit; set pgaudit.log", "3.2")
def _pgaudit(probe: PgProbe) -> Verdict:
    preload = probe.setting("shared_preload_libraries")
    installed = bool(probe.rows("SELECT 1 FROM pg_extension WHERE extname = 'pgaudit'"))
    loaded = "pgaudit" in [p.strip() for p in preload.split(",")]
    return verdict(loaded and installed, shared_preload_libraries=preload, extension_installed=installed)


@CHECKS.check("pg.public_schema_create", "PUBLIC cannot create objects in schema public", "high",
              "REVOKE CREATE ON SCHEMA public FROM PUBLIC;", "4.8")
def _public_create(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT has_schema_privilege('public', oid, 'CREATE') FROM pg_namespace"
                      " WHERE nspname = 'public'")
    if not rows:
        return passed(schema_public="absent")
    return verdict(not rows[0][0], public_can_create=bool(rows[0][0]))


@CHECKS.check("pg.public_execute_risky_functions", "PUBLIC cannot execute file, large-object or admin functions",
              "high", "REVOKE EXECUTE ON FUNCTION <function> FROM PUBLIC;", "4.3")
def _risky_functions(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = ANY(%s)"
                      " AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1", (list(RISKY_FUNCTIONS),))
    return verdict(not rows, functions=[r[0] for r in rows])


@CHECKS.check("pg.security_definer_search_path", "SECURITY DEFINER functions pin their search_path", "high",
              "ALTER FUNCTION <function> SET search_path = pg_catalog, <schema>;", "4.3")
def _secdef_path(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                      " WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                      " AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c"
                      " WHERE c LIKE 'search_path=%%') ORDER BY 1")
    return verdict(not rows, functions=[r[0] for r in rows])


@CHECKS.check("pg.security_definer_superuser_public", "PUBLIC cannot run SECURITY DEFINER functions owned by a "
              "superuser", "high", "REVOKE EXECUTE ON FUNCTION <function> FROM PUBLIC; GRANT it to the roles "
              "that need it", "4.3")
def _secdef_public(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                      " JOIN pg_roles o ON o.oid = p.proowner WHERE p.prosecdef AND o.rolsuper"
                      " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                      " AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1")
    return verdict(not rows, functions=[r[0] for r in rows])


@CHECKS.check("pg.untrusted_languages", "No untrusted procedural language is installed", "medium",
              "DROP EXTENSION <language>; (or DROP LANGUAGE) if no function needs it", "1.5")
def _languages(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT lanname FROM pg_language WHERE NOT lanpltrusted AND lanname NOT IN ('internal', 'c')"
                      " ORDER BY 1")
    return verdict(not rows, languages=[r[0] for r in rows])


@CHECKS.check("pg.risky_extensions", "No risky extension (dblink, file_fdw, adminpack, untrusted PLs) is installed",
              "medium", "DROP EXTENSION <name>; if it is not needed", "1.5")
def _extensions(probe: PgProbe) -> Verdict:
    rows = probe.rows("SELECT extname FROM pg_extension WHERE extname = ANY(%s) ORDER BY 1", (list(RISKY_EXTENSIONS),))
    return verdict(not rows, extensions=[r[0] for r in rows])


@CHECKS.check("pg.rls_on_pii_tables", "Tables holding personal data have row-level security", "medium",
              "ALTER TABLE <table> ENABLE ROW LEVEL SECURITY; and CREATE POLICY ... for each role", "4.5")
def _rls(probe: PgProbe) -> Verdict:
    listed = set(probe.options.get("pii_tables", []))
    rows = probe.rows("SELECT n.nspname, c.relname, c.relrowsecurity, array_agg(a.attname::text ORDER BY a.attnum)"
                      " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
                      " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                      " AND n.nspname !~ '^pg_toast' GROUP BY 1, 2, 3 ORDER BY 1, 2")
    scanned = probe.options.get("pii_source") == "compliance scan"  # the last PII scan's findings, not names
    bad = []
    for schema, table, rls, columns in rows:
        pii = [] if scanned else [c for c in columns if PII_COLUMN.search(c)]
        if (pii or f"{schema}.{table}" in listed or table in listed) and not rls:
            bad.append({"table": f"{schema}.{table}", "pii_columns": pii})
    source = ("the last compliance scan's PII findings" if scanned
              else "column names (run `dbfleet compliance scan` to use discovered PII instead)")
    if not bad:
        return passed(tables_checked=len(rows), source=source)
    return failed(tables=bad[:50], tables_without_rls=len(bad), source=source)



def open_probe(connector: Any, options: dict[str, Any]) -> PgProbe:
    """Open the read-only session the checks use (any write would fail inside it)."""
    connector.conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    return PgProbe(connector.conn, options)
