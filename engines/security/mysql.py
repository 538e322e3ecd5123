"""MySQL/MariaDB security checks (MySQLTuner's security section, CIS MySQL/MariaDB), read-only over SQL."""

from __future__ import annotations

from typing import Any

from engines.security.registry import CheckSet, Unknowable, Verdict, passed, verdict
from engines.security.versions import check_version

CHECKS = CheckSet("mysql")
SYSTEM_USERS = {"root", "mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", "mysql"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class MySQLProbe:
    """What the MySQL checks read; the session is READ ONLY."""

    def __init__(self, conn: Any, options: dict[str, Any]) -> None:
        self.conn, self.options = conn, options
        self.version = self.rows("SELECT VERSION()")[0][0]
        self.variables = {k.lower(): v for k, v in self.rows("SHOW GLOBAL VARIABLES")}
        self._users: list[dict[str, Any]] | None = None

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def variable(self, name: str) -> Any:
        if name not in self.variables:
            raise Unknowable(f"server variable {name} does not exist on {self.version}")
        return self.variables[name]

    def users(self) -> list[dict[str, Any]]:
        """Accounts from mysql.user (roles excluded); needs SELECT on mysql.user."""
        if self._users is None:
            with self.conn.cursor() as cur:
                cur.execute("SELECT * FROM mysql.user")
                names = [d[0].lower() for d in cur.description]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            if rows and "account_locked" not in rows[0]:
                locked = self._mariadb_locked()
                for u in rows:
                    u["account_locked"] = "Y" if (u["user"], u["host"]) in locked else "N"
            self._users = [u for u in rows if str(u.get("is_role", "N")) != "Y"]
        return self._users

    def _mariadb_locked(self) -> set[tuple[str, str]]:
        """MariaDB keeps the lock flag in mysql.global_priv's JSON, not in the mysql.user view."""
        try:
            rows = self.rows("SELECT User, Host FROM mysql.global_priv"
                             " WHERE JSON_VALUE(Priv, '$.account_locked') IN ('true', '1')")
        except Exception:  # no global_priv (MySQL) or no privilege: treat accounts as unlocked
            return set()
        return {(u, h) for u, h in rows}


def _account(u: dict[str, Any]) -> str:
    return f"'{u['user']}'@'{u['host']}'"


def _hash(u: dict[str, Any]) -> str:
    return str(u.get("authentication_string") or u.get("password") or "")


def _users_check(match: Any) -> Any:
    def run(probe: MySQLProbe) -> Verdict:
        bad = sorted(_account(u) for u in probe.users() if match(u))
        return verdict(not bad, accounts=bad)
    return run


def _priv(column: str) -> Any:
    return _users_check(lambda u: u["user"] not in SYSTEM_USERS and str(u.get(column, "N")) == "Y")


CHECKS.check("my.anonymous_users", "No anonymous accounts", "critical",
             "DROP USER ''@'<host>'; for each account listed")(_users_check(lambda u: u["user"] == ""))
CHECKS.check("my.empty_passwords", "No account logs in with an empty password", "critical",
             "ALTER USER <account> IDENTIFIED BY '<strong password>'; (or IDENTIFIED VIA unix_socket)")(
    _users_check(lambda u: _hash(u) == "" and str(u.get("account_locked")) != "Y"
                 and str(u.get("plugin") or "") in ("", "mysql_native_password")))
CHECKS.check("my.root_remote", "root can only log in from the local host", "high",
             "DROP USER 'root'@'<host>'; for every non-local host")(
    _users_check(lambda u: u["user"] == "root" and u["host"] not in LOCAL_HOSTS))
CHECKS.check("my.wildcard_hosts", "No account accepts any host ('%')", "medium",
             "RENAME USER '<user>'@'%' TO '<user>'@'<client network>';")(
    _users_check(lambda u: "%" in str(u["host"])))
CHECKS.check("my.file_privilege", "Only administrators hold FILE", "high",
             "REVOKE FILE ON *.* FROM <account>;")(_priv("file_priv"))
CHECKS.check("my.super_privilege", "Only administrators hold SUPER", "high",
             "REVOKE SUPER ON *.* FROM <account>;")(_priv("super_priv"))
CHECKS.check("my.process_privilege", "Only administrators hold PROCESS (it shows every session's SQL)", "medium",
             "REVOKE PROCESS ON *.* FROM <account>;")(_priv("process_priv"))
CHECKS.check("my.grant_privilege", "Only administrators can grant privileges", "medium",
             "REVOKE GRANT OPTION ON *.* FROM <account>;")(_priv("grant_priv"))
CHECKS.check("my.old_password_plugin", "No account uses the pre-4.1 password hash", "high",
             "ALTER USER <account> IDENTIFIED VIA ed25519 USING PASSWORD('<password>'); "
             "(MySQL: caching_sha2_password)")(
    _users_check(lambda u: u.get("plugin") == "mysql_old_password" or len(_hash(u)) == 16))
CHECKS.check("my.native_password", "Passwords are not stored as unsalted SHA1 (mysql_native_password)", "low",
             "MariaDB: ALTER USER <account> IDENTIFIED VIA ed25519 USING PASSWORD('...'); "
             "MySQL: IDENTIFIED WITH caching_sha2_password BY '...';")(
    _users_check(lambda u: u.get("plugin") == "mysql_native_password" and len(_hash(u)) == 41))


def _variable_check(name: str, ok: Any) -> Any:
    def run(probe: MySQLProbe) -> Verdict:
        value = probe.variable(name)
        return verdict(bool(ok(value)), **{name: value})
    return run


def _is(*values: str) -> Any:
    return lambda v: str(v).upper() in values


for _cid, _title, _sev, _var, _ok, _fix in (
    ("my.local_infile", "LOAD DATA LOCAL INFILE is disabled", "medium", "local_infile", _is("OFF", "0"),
     "local_infile = 0 in [mysqld]"),
    ("my.require_secure_transport", "Clients must use TLS", "medium", "require_secure_transport", _is("ON", "1"),
     "require_secure_transport = ON in [mysqld] (after configuring TLS)"),
    ("my.ssl", "TLS is available to clients", "high", "have_ssl", _is("YES"),
     "configure ssl_cert, ssl_key and ssl_ca in [mysqld] and restart"),
    ("my.skip_name_resolve", "Host names are not resolved at login", "low", "skip_name_resolve", _is("ON", "1"),
     "skip_name_resolve = ON in [mysqld] (grant by IP address)"),
    ("my.symbolic_links", "Symbolic links to data files are disabled", "low", "have_symlink",
     _is("DISABLED", "NO"), "skip_symbolic_links in [mysqld]"),
):
    CHECKS.check(_cid, _title, _sev, _fix)(_variable_check(_var, _ok))


@CHECKS.check("my.secure_file_priv", "Server-side file import/export is confined to one directory", "medium",
              "secure_file_priv = /var/lib/mysql-files (or NULL to disable) in [mysqld]")
def _secure_file_priv(probe: MySQLProbe) -> Verdict:
    value = probe.variable("secure_file_priv")
    return verdict(value is None or value != "", secure_file_priv=value if value is not None else "NULL")


@CHECKS.check("my.test_database", "The sample 'test' database is removed", "low", "DROP DATABASE test;")
def _test_db(probe: MySQLProbe) -> Verdict:
    rows = probe.rows("SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'test'"
                      " OR schema_name LIKE 'test\\_%%'")
    return verdict(not rows, databases=[r[0] for r in rows])


@CHECKS.check("my.version_current", "The server is on the latest minor of a supported release", "high",
              "upgrade to the latest minor release of this series")
def _version(probe: MySQLProbe) -> Verdict:
    product = "mariadb" if "mariadb" in probe.version.lower() else "mysql"
    return check_version(product, probe.version, 2)


def open_probe(connector: Any, options: dict[str, Any]) -> MySQLProbe:
    """Open the read-only session the checks use."""
    with connector.conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION READ ONLY")
    return MySQLProbe(connector.conn, options)


__all__ = ["CHECKS", "MySQLProbe", "open_probe", "passed"]
