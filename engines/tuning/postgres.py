"""PostgreSQL tuner: workload index advice (HypoPG), index hygiene, settings; safe apply and revert."""

from __future__ import annotations

from typing import Any

from engines.connectors import open_connector
from engines.tuning.base import CannotTune, Change, Tuner, TuningReport
from engines.tuning.pg_apply import IndexApplier, is_primary, revert_change, set_timeouts, take_apply_lock
from engines.tuning.pg_hygiene import run_hygiene
from engines.tuning.pg_indexes import Advisor, candidates, unproven_advice
from engines.tuning.pg_layout import create_view, partition_advice, refresh_view, view_advice
from engines.tuning.pg_partition import convert
from engines.tuning.pg_plans import Hypothetical
from engines.tuning.pg_settings import LOCAL_HOSTS, advise_settings, apply_reloadable, host_facts
from engines.tuning.pg_workload import Statement, add_qualstats, catalog, distinct_counts, existing_indexes, read_statements
from engines.tuning.targets import parse_targets


class PostgresTuner(Tuner):
    """Dexter's index method proven with HypoPG, PgHero's hygiene checks, pgtune's settings."""

    kind = "postgresql"

    def analyze(self) -> TuningReport:
        """Read-only analysis of the database's workload, indexes and settings."""
        report = TuningReport(self.db.id, self.kind)
        with open_connector(self.db) as connector:
            conn = connector.conn
            conn.execute("SET default_transaction_read_only = on")  # analysis writes nothing (HypoPG is in memory)
            report.server_version = str(conn.execute("SHOW server_version").fetchone()[0])
            self._privileges(conn, report)
            statements = self._workload(conn, report)
            if self.settings.wants("indexes") and statements is not None:
                self._indexes(conn, statements, report)
            if self.settings.wants("hygiene"):
                report.hygiene = run_hygiene(conn, self.settings, report.limits)
            if self.settings.wants("settings"):
                self._settings(conn, report)
            if self.settings.wants("mviews") and self.settings.create_materialized_views and statements:
                report.mviews = view_advice(conn, statements, self.settings)
            if self.settings.wants("partitions") and self.settings.partitioning_strategy == "time_based" and statements:
                report.partitions = partition_advice(conn, statements, self.settings)
        return report

    def _privileges(self, conn: Any, report: TuningReport) -> None:
        row = conn.execute("SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), current_user"
                           " FROM pg_roles WHERE rolname = current_user").fetchone()
        if row and not row[0]:
            report.limits.append(f"role {row[1]} lacks pg_read_all_stats: other roles' statements and some "
                                 "statistics are hidden, so advice is limited; GRANT pg_read_all_stats TO "
                                 f"{row[1]}")

    def _workload(self, conn: Any, report: TuningReport) -> list[Statement] | None:
        """The analysed statements, or None (with the reason in limits) when pg_stat_statements is missing."""
        if not any(self.settings.wants(a) for a in ("indexes", "mviews", "partitions")):
            return None
        try:
            statements = read_statements(conn, catalog(conn), self.memory, self.settings.max_queries, report.limits,
                                         parse_targets(self.settings.optimization_targets))
        except CannotTune as exc:
            report.limits.append(f"workload: {exc}")
            return None
        report.workload = {"statements": len(statements), "calls": sum(s.calls for s in statements),
                           "qualstats_columns": add_qualstats(conn, statements, report.limits)}
        return statements

    def _indexes(self, conn: Any, statements: list[Statement], report: TuningReport) -> None:
        existing = existing_indexes(conn)
        cands = candidates(statements, existing, distinct_counts(conn), self.settings.max_index_columns)
        has_hypopg, why = Hypothetical.available(conn)
        report.workload |= {"candidates": len(cands), "hypopg": has_hypopg}
        if has_hypopg:
            advisor = Advisor(conn, statements, existing, self.settings)
            report.indexes = advisor.advise(cands)
            failed = advisor.planner.failed
            for cand, why in advisor.unbuildable.items():
                report.limits.append(f"candidate {cand} cannot be a B-tree index: {why}")
        else:
            report.limits.append(str(why))
            report.indexes = unproven_advice(conn, statements, cands, str(why))
            failed = {}
        if failed:
            report.limits.append(f"{len(failed)} statements could not be planned alone (e.g. queryid "
                                 f"{next(iter(failed))}: {next(iter(failed.values()))})")

    def _settings(self, conn: Any, report: TuningReport) -> None:
        facts = host_facts(self.db.host, self.settings.host)
        if facts is None:
            report.limits.append("settings: the database host's memory and CPUs are unknown; set "
                                 "performance_tuning.host.memory_bytes and .cpus")
            return
        report.settings = advise_settings(conn, facts, self.settings.optimize_for)

    def apply(self, report: TuningReport) -> list[Change]:
        """Build the report's proven index advice one at a time; unproven advice is never applied."""
        changes: list[Change] = []
        with open_connector(self.db) as connector:
            conn = connector.conn
            if not is_primary(conn):
                report.limits.append("apply refused: the server is a replica (apply on the primary)")
                return changes
            if not take_apply_lock(conn):
                report.limits.append("apply refused: another tuning apply is running on this database")
                return changes
            applier = IndexApplier(conn, self.db.id, self.settings, self.db.host in LOCAL_HOSTS)
            for advice in report.indexes:
                if not advice.proven:
                    report.limits.append(f"{advice.name}: not applied (not proven by cost: hypopg missing)")
                    continue
                changes.append(applier.apply(advice))
            if self.settings.apply_mviews:
                set_timeouts(conn, self.settings)
                changes.extend(create_view(conn, view, self.db.id) for view in report.mviews)
            if self.settings.apply_partitions and report.partitions:
                changes.extend(convert(conn, plan, self.settings, self.db.id) for plan in report.partitions)
            elif report.partitions:
                report.limits.append("partitioning plans are applied only by an apply that names the area "
                                     "(dbfleet tune DB --apply --only partitions)")
            if self.settings.apply_settings == "reload_only":
                changes.extend(apply_reloadable(conn, report.settings, self.db.id))
        report.changes.extend(changes)
        return changes

    def revert(self, change: dict[str, Any]) -> dict[str, Any]:
        """Drop the index a recorded change created (idempotent)."""
        with open_connector(self.db) as connector:
            if not is_primary(connector.conn):
                raise CannotTune("revert refused: the server is a replica (revert on the primary)")
            return revert_change(connector.conn, change, self.settings)

    def refresh(self, schema: str, view: str) -> dict[str, Any]:
        """Refresh one materialized view an apply created (the beat entry's task), under the timeouts."""
        with open_connector(self.db) as connector:
            conn = connector.conn
            if not is_primary(conn):
                raise CannotTune("refresh refused: the server is a replica (materialized views refresh on the primary)")
            set_timeouts(conn, self.settings)
            return refresh_view(conn, schema, view)
