"""``verify: execute``'s pure parts: which column each ``$n`` is sampled from, LIMIT/OFFSET values, the verdict."""

from __future__ import annotations

import pytest

from engines.errors import ConfigError
from engines.tuning import tuning_settings
from engines.tuning.pg_verify import Sampled, _limits, time_verdict
from engines.tuning.workload import Catalog, shape

CAT = Catalog({("public", "orders"): ["id", "customer_id", "status", "created_at"],
               ("public", "customers"): ["id", "email"]})


def test_each_parameter_is_tied_to_the_column_it_is_compared_to() -> None:
    got = shape("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.email = $1"
                " AND o.status IN ($2, $3) AND o.created_at BETWEEN $4 AND $5 ORDER BY o.id LIMIT $6 OFFSET $7", CAT)
    assert got.param_columns == {1: (("public", "customers"), "email"), 2: (("public", "orders"), "status"),
                                 3: (("public", "orders"), "status"), 4: (("public", "orders"), "created_at"),
                                 5: (("public", "orders"), "created_at")}
    assert _limits("SELECT id FROM orders WHERE id > $1 LIMIT $2 OFFSET $3") == {2: "100", 3: "0"}


def test_the_verdict_weighs_queries_by_calls_and_leaves_out_the_untimed() -> None:
    samples = [Sampled("1", "q1", calls=10, params=[["a"]]), Sampled("2", "q2", calls=1, params=[["b"]]),
               Sampled("3", "q3", calls=5, skipped="no value")]
    keep, saved, evidence = time_verdict(samples, {"1": 0.010, "2": 0.100, "3": "no value"},
                                         {"1": 0.001, "2": 0.100, "3": "no value"}, 30.0) or (False, 0.0, {})
    assert keep and saved == pytest.approx(45.0) and evidence["timed_queries"] == 2
    assert time_verdict(samples[2:], {"3": "x"}, {"3": "x"}, 30.0) is None


def test_an_unknown_verify_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown verify 'timed'; known: plan, execute"):
        tuning_settings({"verify": "timed"}, {})
    assert tuning_settings({}, {"verify": "execute"}).verify == "execute"
